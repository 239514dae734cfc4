//! The local image store: an OCI image layout with blobs, plus transactional metadata.
