//! Test support shared by stowage's crates (a dev-dependency only): real
//! `docker-registry` instances on free ports, plain or with htpasswd auth and
//! TLS under a CA made with the `openssl` CLI, killed on drop; and a
//! scriptable fake HTTP server on 127.0.0.1 for failure modes a real registry
//! will not produce. A missing program fails the test with the Debian package
//! to install: tests never skip.

mod fake_server;
mod registry_process;

pub use fake_server::{FakeServer, SeenRequest, http_response};
pub use registry_process::{REGISTRY_BIN, RegistryProcess, free_port, require};
