//! Runs the shared conformance vectors (`shell/envVarTest`, `shell/wordsTest`,
//! `shell/expansion.json`) against the lexer. Every vector is checked and all
//! failures are reported together.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde_json::Value;

use crate::{Env, Lexer, build_env};

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
        dir.join("shell").is_dir(),
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
fn env_var_test() {
    let text = read("shell/envVarTest");
    let env = build_env(["PWD=/home", "SHELL=bash", "KOREAN=한국어", "NULL="]);
    let lexer = Lexer::new('\\');
    let mut failures = Vec::new();
    let mut checked = 0;
    for (index, line) in text.lines().enumerate() {
        let line_number = index + 1;
        if line.starts_with('#') || line.trim().is_empty() {
            continue;
        }
        let fields: Vec<&str> = line.split('|').map(str::trim).collect();
        let [tag, input, expected] = fields.as_slice() else {
            failures.push(format!("line {line_number}: malformed vector {line:?}"));
            continue;
        };
        if *tag == "W" {
            continue;
        }
        checked += 1;
        let outcome = lexer.expand_word(input, &env);
        let ok = match (&outcome, *expected) {
            (Err(_), "error") => true,
            (Ok(value), expected) => expected != "error" && value == expected,
            (Err(_), _) => false,
        };
        if !ok {
            failures.push(format!(
                "line {line_number}: {input:?} expected {expected:?}, got {outcome:?}"
            ));
        }
    }
    assert_eq!(checked, 228, "envVarTest should have 228 Unix vectors");
    report("envVarTest", checked, &failures);
}

#[test]
fn words_test() {
    let text = read("shell/wordsTest");
    let lexer = Lexer::new('\\');
    let mut env: Vec<(String, String)> = Vec::new();
    let mut failures = Vec::new();
    let mut checked = 0;
    for (index, line) in text.lines().enumerate() {
        let line_number = index + 1;
        if line.starts_with('#') {
            continue;
        }
        if let Some(rest) = line.strip_prefix("ENV ") {
            let rest = rest.trim_start_matches(' ');
            let (name, value) = rest.split_once('=').unwrap_or((rest, ""));
            env.push((name.to_owned(), value.to_owned()));
            continue;
        }
        let Some((input, expected)) = line.split_once('|') else {
            failures.push(format!("line {line_number}: malformed vector {line:?}"));
            continue;
        };
        checked += 1;
        let input = input.trim();
        let expected = expected.trim_start_matches(' ');
        let outcome = lexer.expand_words(input, &env);
        let ok = match &outcome {
            Err(_) => expected == "error",
            Ok(words) => expected != "error" && *words == expected.split(',').collect::<Vec<_>>(),
        };
        if !ok {
            failures.push(format!(
                "line {line_number}: {input:?} expected {expected:?}, got {outcome:?}"
            ));
        }
    }
    assert_eq!(checked, 24, "wordsTest should have 24 vectors");
    report("wordsTest", checked, &failures);
}

fn string_set(value: Option<&Value>) -> Vec<String> {
    value
        .and_then(Value::as_array)
        .map(|items| {
            items
                .iter()
                .filter_map(Value::as_str)
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default()
}

fn check_expansion_case(case: &Value, lexer: &Lexer) -> Result<(), String> {
    let kind = case["kind"].as_str().unwrap_or_default();
    let expected = &case["expected"];
    if kind == "env_lookup" {
        let env = build_env(string_set(case.get("env_list")));
        let name = case["name"].as_str().unwrap_or_default();
        let want_value = expected["value"].as_str().unwrap_or_default();
        let want_set = case["ref_is_set"].as_bool().unwrap_or(false);
        let got = env.lookup(name);
        let ok = got.unwrap_or_default() == want_value && got.is_some() == want_set;
        return if ok {
            Ok(())
        } else {
            Err(format!(
                "lookup {name:?} got {got:?}, want {want_value:?} set={want_set}"
            ))
        };
    }
    let input = case["input"].as_str().ok_or("missing input")?;
    let env: BTreeMap<String, String> = case["env"]
        .as_object()
        .ok_or("missing env")?
        .iter()
        .map(|(key, value)| (key.clone(), value.as_str().unwrap_or_default().to_owned()))
        .collect();
    let outcome = lexer.expand_word_with_matches(input, &env);
    let want_error = expected["error"].as_bool().unwrap_or(false);
    match outcome {
        Err(error) => {
            if !want_error {
                return Err(format!("unexpected error {error}"));
            }
            if let Some(needle) = expected["error_contains"].as_str()
                && !error.to_string().contains(needle)
            {
                return Err(format!("error {error} does not contain {needle:?}"));
            }
            Ok(())
        }
        Ok(expansion) => {
            if want_error {
                return Err(format!("expected an error, got {expansion:?}"));
            }
            let want = expected["result"]
                .as_str()
                .ok_or("missing expected.result")?;
            if expansion.value != want {
                return Err(format!("got {:?}, want {want:?}", expansion.value));
            }
            if kind == "process_word_with_matches" {
                let matched: Vec<String> = expansion.matched.iter().cloned().collect();
                let unmatched: Vec<String> = expansion.unmatched.iter().cloned().collect();
                if matched != string_set(expected.get("matched"))
                    || unmatched != string_set(expected.get("unmatched"))
                {
                    return Err(format!("matched {matched:?} unmatched {unmatched:?}"));
                }
            }
            Ok(())
        }
    }
}

#[test]
fn expansion_json() {
    let document: Value =
        serde_json::from_str(&read("shell/expansion.json")).expect("expansion.json is valid JSON");
    let cases = document["cases"].as_array().expect("cases array");
    let lexer = Lexer::new('\\');
    let mut failures = Vec::new();
    for case in cases {
        let id = case["id"].as_str().unwrap_or("?");
        if let Err(problem) = check_expansion_case(case, &lexer) {
            failures.push(format!("{id}: {problem}"));
        }
    }
    assert_eq!(cases.len(), 63, "expansion.json should have 63 vectors");
    report("expansion.json", cases.len(), &failures);
}
