//! Runs the shared conformance vectors under `dockerignore/` (patterns.tsv,
//! matcher-new.json, readall.json, context.json). Every vector is checked
//! and all failures are reported together.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::{ContextFilter, PatternMatcher, ignore_file_for, read_patterns};

fn conformance_dir() -> PathBuf {
    let dir = std::env::var_os("STOWAGE_CONFORMANCE").map_or_else(
        || {
            PathBuf::from(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/../../../../shared/conformance"
            ))
        },
        PathBuf::from,
    );
    assert!(
        dir.join("dockerignore").is_dir(),
        "conformance corpus not found at {} (set STOWAGE_CONFORMANCE)",
        dir.display()
    );
    dir
}

fn read(relative: &str) -> String {
    let path = conformance_dir().join(relative);
    std::fs::read_to_string(&path)
        .unwrap_or_else(|error| panic!("cannot read {}: {error}", path.display()))
}

fn cases(relative: &str) -> Vec<Value> {
    let document: Value = serde_json::from_str(&read(relative))
        .unwrap_or_else(|error| panic!("{relative} is not valid JSON: {error}"));
    document["cases"].as_array().cloned().expect("cases array")
}

fn strings(value: &Value) -> Vec<String> {
    value
        .as_array()
        .map(|items| {
            items
                .iter()
                .filter_map(Value::as_str)
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default()
}

fn report(name: &str, checked: usize, failures: &[String]) {
    assert!(checked > 0, "{name}: no vectors were checked");
    assert!(
        failures.is_empty(),
        "{name}: {} of {checked} vectors failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn patterns_tsv() {
    let text = read("dockerignore/patterns.tsv");
    let mut failures = Vec::new();
    let mut checked = 0;
    for line in text.lines().skip(1) {
        if line.is_empty() {
            continue;
        }
        let fields: Vec<&str> = line.split('\t').collect();
        let [id, _api, expected, path, patterns @ ..] = fields.as_slice() else {
            failures.push(format!("malformed row {line:?}"));
            continue;
        };
        checked += 1;
        // Evaluate twice: a failing pattern must keep failing.
        let outcome = PatternMatcher::new(patterns.iter().copied())
            .map_err(|error| error.to_string())
            .and_then(|matcher| {
                let first = matcher.matches(path).map_err(|error| error.to_string());
                let second = matcher.matches(path).map_err(|error| error.to_string());
                if first == second {
                    first
                } else {
                    Err(format!("unstable: {first:?} then {second:?}"))
                }
            });
        let ok = match (&outcome, *expected) {
            (Ok(true), "true") | (Ok(false), "false") => true,
            (Err(error), "error") => !error.starts_with("unstable"),
            _ => false,
        };
        if !ok {
            failures.push(format!(
                "{id}: path {path:?} patterns {patterns:?} expected {expected}, got {outcome:?}"
            ));
        }
    }
    assert_eq!(checked, 110, "patterns.tsv should have 110 vectors");
    report("patterns.tsv", checked, &failures);
}

#[test]
fn matcher_new_json() {
    let cases = cases("dockerignore/matcher-new.json");
    let mut failures = Vec::new();
    for case in &cases {
        let id = case["id"].as_str().unwrap_or("?");
        let patterns = strings(&case["patterns"]);
        let expected = &case["expected"];
        let outcome = PatternMatcher::new(&patterns);
        let mut problems = Vec::new();
        match &outcome {
            Err(error) => {
                if expected["error"].as_bool() != Some(true) {
                    problems.push(format!("unexpected error {error}"));
                }
            }
            Ok(matcher) => {
                if expected["error"].as_bool() == Some(true) {
                    problems.push("expected an error".to_owned());
                }
                if let Some(count) = expected["active_patterns"].as_u64()
                    && u64::try_from(matcher.len()).ok() != Some(count)
                {
                    problems.push(format!("active patterns {} != {count}", matcher.len()));
                }
                if let Some(exclusions) = expected["exclusions"].as_bool()
                    && matcher.has_exclusions() != exclusions
                {
                    problems.push(format!("exclusions {}", matcher.has_exclusions()));
                }
                if case.get("ref_patterns").is_some()
                    && matcher.patterns() != strings(&case["ref_patterns"])
                {
                    problems.push(format!("patterns {:?}", matcher.patterns()));
                }
            }
        }
        if !problems.is_empty() {
            failures.push(format!("{id}: {}", problems.join("; ")));
        }
    }
    assert_eq!(cases.len(), 7, "matcher-new.json should have 7 vectors");
    report("matcher-new.json", cases.len(), &failures);
}

#[test]
fn readall_json() {
    let cases = cases("dockerignore/readall.json");
    let mut failures = Vec::new();
    for case in &cases {
        let id = case["id"].as_str().unwrap_or("?");
        let got = match case["input"].as_str() {
            Some(input) => read_patterns(input.as_bytes()),
            // No file at all.
            None => Vec::new(),
        };
        let want = strings(&case["expected"]);
        if got != want {
            failures.push(format!("{id}: got {got:?}, want {want:?}"));
        }
    }
    assert_eq!(cases.len(), 14, "readall.json should have 14 vectors");
    report("readall.json", cases.len(), &failures);
}

fn check_context_case(case: &Value) -> Result<(), String> {
    let expected = &case["expected"];
    let files = strings(&case["files"]);
    if let Some(text) = case["dockerignore"].as_str() {
        let filter = ContextFilter::from_ignore_text(text.as_bytes());
        if expected["error"].as_bool() == Some(true) {
            return match filter {
                Err(_) => Ok(()),
                Ok(_) => Err("expected the build to fail".to_owned()),
            };
        }
        let filter = filter.map_err(|error| error.to_string())?;
        let included: BTreeSet<String> = filter
            .filter(files.iter().map(String::as_str))
            .map_err(|error| error.to_string())?
            .into_iter()
            .map(str::to_owned)
            .collect();
        let excluded: BTreeSet<String> = files
            .iter()
            .filter(|file| !included.contains(*file))
            .cloned()
            .collect();
        let want_included: BTreeSet<String> = strings(&expected["included"]).into_iter().collect();
        let want_excluded: BTreeSet<String> = strings(&expected["excluded"]).into_iter().collect();
        if included != want_included || excluded != want_excluded {
            return Err(format!("included {included:?} excluded {excluded:?}"));
        }
        return Ok(());
    }
    // Ignore-file selection: lay the context out on disk.
    let dir = tempfile::tempdir().map_err(|error| error.to_string())?;
    let ignore_files = case["ignore_files"]
        .as_object()
        .ok_or("missing ignore_files")?;
    for file in &files {
        let content = ignore_files
            .get(file)
            .and_then(Value::as_str)
            .unwrap_or("content\n");
        std::fs::write(dir.path().join(file), content).map_err(|error| error.to_string())?;
    }
    let dockerfile = case["dockerfile_name"]
        .as_str()
        .ok_or("missing dockerfile_name")?;
    let used = ignore_file_for(dir.path(), Path::new(dockerfile));
    let want_used = expected["ignore_file_used"]
        .as_str()
        .ok_or("missing ignore_file_used")?;
    if used.as_deref() != Some(dir.path().join(want_used).as_path()) {
        return Err(format!("ignore file {used:?}, want {want_used}"));
    }
    let filter = ContextFilter::load(dir.path(), Path::new(dockerfile))
        .map_err(|error| error.to_string())?;
    for present in strings(&expected["present"]) {
        if filter.is_included(&present) != Ok(true) {
            return Err(format!("{present} should be present"));
        }
    }
    for absent in strings(&expected["absent"]) {
        if filter.is_included(&absent) != Ok(false) {
            return Err(format!("{absent} should be absent"));
        }
    }
    Ok(())
}

#[test]
fn context_json() {
    let cases = cases("dockerignore/context.json");
    let mut failures = Vec::new();
    for case in &cases {
        let id = case["id"].as_str().unwrap_or("?");
        if let Err(problem) = check_context_case(case) {
            failures.push(format!("{id}: {problem}"));
        }
    }
    assert_eq!(cases.len(), 4, "context.json should have 4 vectors");
    report("context.json", cases.len(), &failures);
}
