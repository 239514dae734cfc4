//! Fuzz target: the Dockerfile parser must never panic on any text.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let _ = stowage_dockerfile::parse(&text);
});
