//! Fuzz target: .dockerignore reading and matching must never panic. The
//! input is split at the first NUL byte into the ignore-file text and the
//! path to match.
#![no_main]

use libfuzzer_sys::fuzz_target;
use stowage_dockerignore::{PatternMatcher, read_patterns};

fuzz_target!(|data: &[u8]| {
    let (text, path) = match data.iter().position(|&byte| byte == 0) {
        Some(split) => (&data[..split], &data[split + 1..]),
        None => (data, &b"a/b/c"[..]),
    };
    let patterns = read_patterns(text);
    let path = String::from_utf8_lossy(path);
    if let Ok(matcher) = PatternMatcher::new(&patterns) {
        let first = matcher.matches(&path);
        assert_eq!(first, matcher.matches(&path), "matching must be repeatable");
        let _ = matcher.can_skip_dir(&path);
        let _ = matcher.has_exclusions();
    }
});
