//! The protocol operations: manifests (GET/HEAD/PUT, digest-verified, platform
//! selection through lists and indexes) and blobs (existence check, streaming
//! verified download with `Range` resume, cross-repository mount with fallback
//! to upload on 202, monolithic or chunked streaming upload).

use std::io::{Read, Seek, SeekFrom, Write};
use std::path::PathBuf;
use std::time::Instant;

use stowage_digest::{Digest, Hasher};
use ureq::http::{self, Method};

use crate::auth::Scopes;
use crate::client::{Call, CallBody, RegistryClient, Subject, header, read_limited};
use crate::error::{RegistryError, Result};
use crate::manifest::{self, MANIFEST_ACCEPT, MAX_MANIFEST_SIZE, Manifest};
use crate::progress::Progress;
use crate::reference::{Platform, Repository, TagOrDigest};

/// Something a blob can be uploaded from, re-openable at an offset so failed
/// uploads can be retried without holding the blob in memory.
pub trait BlobSource: Sync {
    /// Total length in bytes.
    fn len(&self) -> u64;
    /// Whether the blob is empty.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// A reader positioned at `offset`.
    fn open_at(&self, offset: u64) -> std::io::Result<Box<dyn Read + '_>>;
    /// For error messages.
    fn describe(&self) -> String;
}

/// A blob stored in a file.
#[derive(Debug, Clone)]
pub struct FileSource {
    path: PathBuf,
    len: u64,
}

impl FileSource {
    /// Opens the file's metadata (its length is fixed from now on).
    pub fn new(path: impl Into<PathBuf>) -> Result<Self> {
        let path = path.into();
        let len = std::fs::metadata(&path)
            .map_err(|e| RegistryError::io(format!("reading {}", path.display()), e))?
            .len();
        Ok(FileSource { path, len })
    }
}

impl BlobSource for FileSource {
    fn len(&self) -> u64 {
        self.len
    }
    fn open_at(&self, offset: u64) -> std::io::Result<Box<dyn Read + '_>> {
        let mut file = std::fs::File::open(&self.path)?;
        file.seek(SeekFrom::Start(offset))?;
        Ok(Box::new(std::io::BufReader::with_capacity(
            256 * 1024,
            file,
        )))
    }
    fn describe(&self) -> String {
        self.path.display().to_string()
    }
}

impl BlobSource for [u8] {
    fn len(&self) -> u64 {
        <[u8]>::len(self) as u64
    }
    fn open_at(&self, offset: u64) -> std::io::Result<Box<dyn Read + '_>> {
        let start = usize::try_from(offset).unwrap_or(usize::MAX);
        Ok(Box::new(self.get(start..).unwrap_or_default()))
    }
    fn describe(&self) -> String {
        format!("{} bytes in memory", <[u8]>::len(self))
    }
}

impl BlobSource for Vec<u8> {
    fn len(&self) -> u64 {
        self.as_slice().len() as u64
    }
    fn open_at(&self, offset: u64) -> std::io::Result<Box<dyn Read + '_>> {
        self.as_slice().open_at(offset)
    }
    fn describe(&self) -> String {
        self.as_slice().describe()
    }
}

/// Metadata from a manifest HEAD.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManifestHead {
    pub digest: Option<Digest>,
    pub media_type: Option<String>,
    pub size: Option<u64>,
}

/// A platform-resolved image: the index it came through (if any) and the image manifest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedManifest {
    pub index: Option<Manifest>,
    pub manifest: Manifest,
}

/// How a blob got into the target repository.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PushOutcome {
    /// It was already there (HEAD answered 200).
    AlreadyExists,
    /// Cross-repository mount succeeded (201).
    Mounted,
    /// Uploaded its bytes.
    Uploaded,
}

/// Result of a mount request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MountOutcome {
    Mounted,
    /// The registry did not mount (202) and opened an upload session at this URL.
    UploadSession(String),
}

fn reference_name(repo: &Repository, reference: &TagOrDigest) -> String {
    format!("{repo}{reference}")
}

fn digest_header(response: &http::Response<ureq::Body>) -> Option<Digest> {
    header(response, "docker-content-digest")?
        .trim()
        .parse()
        .ok()
}

fn content_length(response: &http::Response<ureq::Body>) -> Option<u64> {
    header(response, "content-length")?.trim().parse().ok()
}

impl RegistryClient {
    /// GET a manifest (any list or image type). The digest is computed from the
    /// bytes, checked against the requested digest and the `Docker-Content-Digest` header.
    pub fn get_manifest(&self, repo: &Repository, reference: &TagOrDigest) -> Result<Manifest> {
        let name = reference_name(repo, reference);
        let url = self.url(
            &repo.registry,
            &format!(
                "{}/manifests/{}",
                repo.repository,
                reference.as_url_component()
            ),
        )?;
        let call = Call::new(Method::GET, url.clone(), Scopes::pull(&repo.repository))
            .header("accept", MANIFEST_ACCEPT);
        let response = self.execute(&repo.registry, &call)?;
        if response.status().as_u16() != 200 {
            return Err(self.status_error(
                &repo.registry,
                &url,
                response,
                &Subject::Manifest(name),
            ));
        }
        let header_digest = digest_header(&response);
        let content_type = header(&response, "content-type")
            .map(|v| v.split(';').next().unwrap_or(v).trim().to_owned());
        let bytes = read_limited(response, MAX_MANIFEST_SIZE, &url)?;
        let digest = Digest::of(&bytes);
        if let TagOrDigest::Digest(expected) = reference
            && *expected != digest
        {
            return Err(RegistryError::DigestMismatch {
                what: format!("manifest {name}"),
                expected: *expected,
                actual: digest,
            });
        }
        if let Some(announced) = header_digest
            && announced != digest
        {
            return Err(RegistryError::DigestMismatch {
                what: format!("manifest {name} (Docker-Content-Digest header)"),
                expected: announced,
                actual: digest,
            });
        }
        let media_type = match content_type {
            Some(t) if manifest::is_index(&t) || manifest::is_image_manifest(&t) => t,
            other => manifest::sniff_media_type(&bytes)
                .or(other)
                .unwrap_or_else(|| "application/octet-stream".to_owned()),
        };
        Ok(Manifest {
            bytes,
            media_type,
            digest,
        })
    }

    /// HEAD a manifest: None if it does not exist.
    pub fn head_manifest(
        &self,
        repo: &Repository,
        reference: &TagOrDigest,
    ) -> Result<Option<ManifestHead>> {
        let url = self.url(
            &repo.registry,
            &format!(
                "{}/manifests/{}",
                repo.repository,
                reference.as_url_component()
            ),
        )?;
        let call = Call::new(Method::HEAD, url.clone(), Scopes::pull(&repo.repository))
            .header("accept", MANIFEST_ACCEPT);
        let response = self.execute(&repo.registry, &call)?;
        match response.status().as_u16() {
            200 => Ok(Some(ManifestHead {
                digest: digest_header(&response),
                media_type: header(&response, "content-type").map(str::to_owned),
                size: content_length(&response),
            })),
            404 => Ok(None),
            _ => Err(self.status_error(
                &repo.registry,
                &url,
                response,
                &Subject::Manifest(reference_name(repo, reference)),
            )),
        }
    }

    /// Fetches a manifest and, if it is a list or index, the entry for `platform`.
    pub fn get_manifest_for_platform(
        &self,
        repo: &Repository,
        reference: &TagOrDigest,
        platform: &Platform,
    ) -> Result<ResolvedManifest> {
        let name = reference_name(repo, reference);
        let first = self.get_manifest(repo, reference)?;
        if manifest::is_image_manifest(&first.media_type) {
            return Ok(ResolvedManifest {
                index: None,
                manifest: first,
            });
        }
        if !manifest::is_index(&first.media_type) {
            return Err(RegistryError::UnsupportedMediaType {
                reference: name,
                media_type: first.media_type,
            });
        }
        let chosen = manifest::select_platform(&first.bytes, platform, &name)?;
        let image = self.get_manifest(repo, &TagOrDigest::Digest(chosen.digest))?;
        if !manifest::is_image_manifest(&image.media_type) {
            return Err(RegistryError::UnsupportedMediaType {
                reference: format!("{repo}@{}", chosen.digest),
                media_type: image.media_type,
            });
        }
        Ok(ResolvedManifest {
            index: Some(first),
            manifest: image,
        })
    }

    /// PUTs a manifest under a tag or digest; returns its digest.
    pub fn put_manifest(
        &self,
        repo: &Repository,
        reference: &TagOrDigest,
        bytes: &[u8],
        media_type: &str,
    ) -> Result<Digest> {
        let digest = Digest::of(bytes);
        if let TagOrDigest::Digest(expected) = reference
            && *expected != digest
        {
            return Err(RegistryError::DigestMismatch {
                what: format!("manifest to push as {}", reference_name(repo, reference)),
                expected: *expected,
                actual: digest,
            });
        }
        let url = self.url(
            &repo.registry,
            &format!(
                "{}/manifests/{}",
                repo.repository,
                reference.as_url_component()
            ),
        )?;
        let call = Call::new(Method::PUT, url.clone(), Scopes::push(&repo.repository))
            .header("content-type", media_type)
            .body(CallBody::Bytes(bytes));
        let response = self.execute(&repo.registry, &call)?;
        if !matches!(response.status().as_u16(), 200..=202) {
            return Err(self.status_error(
                &repo.registry,
                &url,
                response,
                &Subject::Manifest(reference_name(repo, reference)),
            ));
        }
        if let Some(announced) = digest_header(&response)
            && announced != digest
        {
            return Err(RegistryError::DigestMismatch {
                what: format!(
                    "pushed manifest {} (registry answer)",
                    reference_name(repo, reference)
                ),
                expected: digest,
                actual: announced,
            });
        }
        Ok(digest)
    }

    /// Whether a blob is in the repository (HEAD).
    pub fn blob_exists(&self, repo: &Repository, digest: &Digest) -> Result<bool> {
        let url = self.url(
            &repo.registry,
            &format!("{}/blobs/{digest}", repo.repository),
        )?;
        let call = Call::new(Method::HEAD, url.clone(), Scopes::pull(&repo.repository));
        let response = self.execute(&repo.registry, &call)?;
        match response.status().as_u16() {
            200 => Ok(true),
            404 => Ok(false),
            _ => Err(self.status_error(
                &repo.registry,
                &url,
                response,
                &Subject::Blob(&repo.repository, digest),
            )),
        }
    }

    /// Streams a blob into `sink`, verifying its size (if `expected_size` is given)
    /// and digest before returning. A dropped connection is resumed with `Range`
    /// (or restarted, skipping the bytes already written, if the registry ignores
    /// ranges), within the retry policy. Returns the number of bytes written.
    /// On error, `sink` may hold partial data: write to a temp file and discard it.
    pub fn fetch_blob(
        &self,
        repo: &Repository,
        digest: &Digest,
        expected_size: Option<u64>,
        sink: &mut dyn Write,
        progress: &dyn Progress,
    ) -> Result<u64> {
        let url = self.url(
            &repo.registry,
            &format!("{}/blobs/{digest}", repo.repository),
        )?;
        let what = format!("blob {}@{digest}", repo);
        let mut hasher = Hasher::new();
        let mut written: u64 = 0;
        let mut failures = 0;
        let started = Instant::now();
        let mut buffer = vec![0u8; 256 * 1024];
        loop {
            let mut call = Call::new(Method::GET, url.clone(), Scopes::pull(&repo.repository));
            if written > 0 {
                call = call.header("range", format!("bytes={written}-"));
            }
            let response = self.execute(&repo.registry, &call)?;
            let status = response.status().as_u16();
            let mut skip: u64 = 0;
            match status {
                200 => {
                    if let (Some(declared), Some(expected)) =
                        (content_length(&response), expected_size)
                        && declared != expected
                    {
                        return Err(RegistryError::SizeMismatch {
                            what: format!("{what} (Content-Length)"),
                            expected,
                            actual: declared,
                        });
                    }
                    skip = written;
                }
                206 => {
                    let range_start = header(&response, "content-range")
                        .and_then(|v| v.trim().strip_prefix("bytes "))
                        .and_then(|v| v.split('-').next())
                        .and_then(|v| v.trim().parse::<u64>().ok());
                    if written == 0 || range_start != Some(written) {
                        return Err(RegistryError::InvalidResponse {
                            url: url.clone(),
                            detail: format!(
                                "206 with Content-Range starting at {range_start:?}, asked for {written}"
                            ),
                        });
                    }
                    if let (Some(declared), Some(expected)) =
                        (content_length(&response), expected_size)
                        && declared.checked_add(written) != Some(expected)
                    {
                        return Err(RegistryError::SizeMismatch {
                            what: format!("{what} (Content-Length of resumed range)"),
                            expected: expected.saturating_sub(written),
                            actual: declared,
                        });
                    }
                }
                _ => {
                    return Err(self.status_error(
                        &repo.registry,
                        &url,
                        response,
                        &Subject::Blob(&repo.repository, digest),
                    ));
                }
            }
            let mut reader = response.into_body().into_reader();
            let mut stream_error = None;
            loop {
                let n = match reader.read(&mut buffer) {
                    Ok(0) => break,
                    Ok(n) => n,
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                    Err(e) => {
                        stream_error = Some(e);
                        break;
                    }
                };
                let mut chunk = buffer.get(..n).unwrap_or_default();
                if skip > 0 {
                    let dropped = usize::try_from(skip).unwrap_or(usize::MAX).min(chunk.len());
                    chunk = chunk.get(dropped..).unwrap_or_default();
                    skip -= dropped as u64;
                }
                if chunk.is_empty() {
                    continue;
                }
                let after = written.saturating_add(chunk.len() as u64);
                if let Some(expected) = expected_size
                    && after > expected
                {
                    return Err(RegistryError::SizeMismatch {
                        what: what.clone(),
                        expected,
                        actual: after,
                    });
                }
                hasher.update(chunk);
                sink.write_all(chunk)
                    .map_err(|e| RegistryError::io(format!("writing {what}"), e))?;
                written = after;
                progress.on_progress(digest, written, expected_size);
            }
            let truncated = match expected_size {
                Some(expected) => written < expected,
                None => false,
            };
            if stream_error.is_none() && !truncated {
                break;
            }
            failures += 1;
            if !self.options.retry.may_retry(failures, started) {
                return Err(match (stream_error, expected_size) {
                    (Some(e), _) => RegistryError::Unreachable {
                        url: url.clone(),
                        detail: format!("connection dropped after {written} bytes of {what}: {e}"),
                    },
                    (None, Some(expected)) => RegistryError::SizeMismatch {
                        what,
                        expected,
                        actual: written,
                    },
                    (None, None) => RegistryError::Unreachable {
                        url: url.clone(),
                        detail: format!("body of {what} ended early"),
                    },
                });
            }
            self.options.retry.wait(failures, None);
        }
        if let Some(expected) = expected_size
            && written != expected
        {
            return Err(RegistryError::SizeMismatch {
                what,
                expected,
                actual: written,
            });
        }
        let actual = hasher.finish();
        if actual != *digest {
            return Err(RegistryError::DigestMismatch {
                what,
                expected: *digest,
                actual,
            });
        }
        sink.flush()
            .map_err(|e| RegistryError::io(format!("writing {what}"), e))?;
        Ok(written)
    }

    /// Asks the registry to mount `digest` from `from` (same registry) into `repo`.
    pub fn mount_blob(
        &self,
        repo: &Repository,
        digest: &Digest,
        from: &str,
    ) -> Result<MountOutcome> {
        let url = self.url(
            &repo.registry,
            &format!(
                "{}/blobs/uploads/?mount={}&from={}",
                repo.repository,
                crate::auth::query_encode(&digest.to_string()),
                crate::auth::query_encode(from)
            ),
        )?;
        let call = Call::new(
            Method::POST,
            url.clone(),
            Scopes::push_with_mount(&repo.repository, from),
        );
        let response = self.execute(&repo.registry, &call)?;
        match response.status().as_u16() {
            201 => Ok(MountOutcome::Mounted),
            202 => {
                let location = header(&response, "location").ok_or_else(|| {
                    RegistryError::InvalidResponse {
                        url: url.clone(),
                        detail: "202 without Location".into(),
                    }
                })?;
                Ok(MountOutcome::UploadSession(
                    self.absolute_location(&repo.registry, location)?,
                ))
            }
            _ => Err(self.status_error(&repo.registry, &url, response, &Subject::Other)),
        }
    }

    fn start_upload(&self, repo: &Repository) -> Result<String> {
        let url = self.url(
            &repo.registry,
            &format!("{}/blobs/uploads/", repo.repository),
        )?;
        let call = Call::new(Method::POST, url.clone(), Scopes::push(&repo.repository));
        let response = self.execute(&repo.registry, &call)?;
        if response.status().as_u16() != 202 {
            return Err(self.status_error(&repo.registry, &url, response, &Subject::Other));
        }
        let location =
            header(&response, "location").ok_or_else(|| RegistryError::InvalidResponse {
                url: url.clone(),
                detail: "202 without Location".into(),
            })?;
        self.absolute_location(&repo.registry, location)
    }

    /// Uploads into an open session: one PUT, or PATCH chunks then a closing PUT.
    fn upload_to_session(
        &self,
        repo: &Repository,
        mut location: String,
        digest: &Digest,
        source: &dyn BlobSource,
        progress: &dyn Progress,
    ) -> Result<()> {
        let total = source.len();
        let scopes = Scopes::push(&repo.repository);
        let chunk_size = self.options.chunk_size.filter(|&c| c > 0 && c < total);
        let mut offset = 0u64;
        if let Some(chunk_size) = chunk_size {
            while offset < total {
                let len = chunk_size.min(total - offset);
                let call = Call::new(Method::PATCH, location.clone(), scopes.clone())
                    .header("content-type", "application/octet-stream")
                    .header("content-range", format!("{}-{}", offset, offset + len - 1))
                    .body(CallBody::Source {
                        source,
                        offset,
                        len,
                        progress: None,
                    })
                    .no_retry();
                let response = self.execute(&repo.registry, &call)?;
                if response.status().as_u16() != 202 {
                    let url = location.split('?').next().unwrap_or_default().to_owned();
                    return Err(self.status_error(&repo.registry, &url, response, &Subject::Other));
                }
                if let Some(next) = header(&response, "location") {
                    location = self.absolute_location(&repo.registry, next)?;
                }
                offset += len;
                progress.on_progress(digest, offset, Some(total));
            }
        }
        let separator = if location.contains('?') { '&' } else { '?' };
        let put_url = format!(
            "{location}{separator}digest={}",
            crate::auth::query_encode(&digest.to_string())
        );
        let body = if offset < total {
            CallBody::Source {
                source,
                offset,
                len: total - offset,
                progress: Some((progress, digest)),
            }
        } else {
            CallBody::Empty
        };
        let call = Call::new(Method::PUT, put_url, scopes)
            .header("content-type", "application/octet-stream")
            .body(body)
            .no_retry();
        let response = self.execute(&repo.registry, &call)?;
        let url = location.split('?').next().unwrap_or_default().to_owned();
        match response.status().as_u16() {
            201 | 204 => {
                if let Some(announced) = digest_header(&response)
                    && announced != *digest
                {
                    return Err(RegistryError::DigestMismatch {
                        what: format!("uploaded blob {repo}@{digest} (registry answer)"),
                        expected: *digest,
                        actual: announced,
                    });
                }
                Ok(())
            }
            400 => {
                // Tell a corrupt local source apart from a registry complaint.
                let actual = hash_source(source)?;
                if actual != *digest {
                    return Err(RegistryError::DigestMismatch {
                        what: format!("local content of {} pushed as {digest}", source.describe()),
                        expected: *digest,
                        actual,
                    });
                }
                Err(self.status_error(&repo.registry, &url, response, &Subject::Other))
            }
            _ => Err(self.status_error(&repo.registry, &url, response, &Subject::Other)),
        }
    }

    /// Pushes a blob: skipped if present, mounted from `mount_from` (a repository
    /// on the same registry) if given and possible, else uploaded streaming from
    /// `source`. Transient failures restart the upload within the retry policy.
    pub fn push_blob(
        &self,
        repo: &Repository,
        digest: &Digest,
        source: &dyn BlobSource,
        mount_from: Option<&str>,
        progress: &dyn Progress,
    ) -> Result<PushOutcome> {
        let total = source.len();
        if self.blob_exists(repo, digest)? {
            progress.on_progress(digest, total, Some(total));
            return Ok(PushOutcome::AlreadyExists);
        }
        let started = Instant::now();
        let mut failures = 0;
        let mut try_mount = mount_from.filter(|from| *from != repo.repository);
        loop {
            let session = match try_mount.take() {
                Some(from) => match self.mount_blob(repo, digest, from)? {
                    MountOutcome::Mounted => {
                        progress.on_progress(digest, total, Some(total));
                        return Ok(PushOutcome::Mounted);
                    }
                    MountOutcome::UploadSession(location) => location,
                },
                None => self.start_upload(repo)?,
            };
            match self.upload_to_session(repo, session, digest, source, progress) {
                Ok(()) => return Ok(PushOutcome::Uploaded),
                Err(error) => {
                    failures += 1;
                    if error.is_transient() && self.options.retry.may_retry(failures, started) {
                        self.options.retry.wait(failures, None);
                        continue;
                    }
                    return Err(error);
                }
            }
        }
    }
}

fn hash_source(source: &dyn BlobSource) -> Result<Digest> {
    let mut reader = source
        .open_at(0)
        .map_err(|e| RegistryError::io(format!("reading {}", source.describe()), e))?;
    let mut hasher = Hasher::new();
    let mut buffer = vec![0u8; 64 * 1024];
    loop {
        let n = reader
            .read(&mut buffer)
            .map_err(|e| RegistryError::io(format!("reading {}", source.describe()), e))?;
        if n == 0 {
            break;
        }
        hasher.update(buffer.get(..n).unwrap_or_default());
    }
    Ok(hasher.finish())
}
