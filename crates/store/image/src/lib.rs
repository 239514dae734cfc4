//! Image model: OCI and Docker configs, manifests, indexes, digests, references and canonical JSON.
