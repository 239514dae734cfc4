//! Tests against a scripted fake HTTP server and a real distribution registry.

mod fake_server;
mod real_registry;
