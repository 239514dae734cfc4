//! stowage's integration tests: one test binary that drives the real `stowage`
//! executable, and real peers (dockerd, skopeo, umoci, a registry) where a test
//! compares with them or uses them as clients.

mod advisor;
mod build;
mod convert;
mod images;
mod lint;
mod regcache;
mod registry;
mod reproducible;
mod squash;
mod support;
