//! Conformance tests against the shared vectors (`/work/shared/conformance`):
//! parser dumps, negative cases, misc parser facts, heredocs, line parsers and
//! directives. Every vector is checked; all failures are reported together.

use std::path::PathBuf;

use serde_json::Value;

use crate::directives::{DirectiveLookup, detect_syntax, parse_all, parse_directive};
use crate::heredoc::{chomp_heredoc_content, heredocs_from_line, parse_heredoc_word};
use crate::line_parsers::{
    JsonArray, name_val_values, parse_json_array, parse_name_val, split_words,
};
use crate::parse;

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
        dir.is_dir(),
        "conformance vectors not found at {} (set STOWAGE_CONFORMANCE)",
        dir.display()
    );
    dir
}

fn load_cases(rel: &str) -> Vec<Value> {
    let path = conformance_dir().join(rel);
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    let doc: Value = serde_json::from_str(&text).expect("vector file is JSON");
    let cases = doc["cases"].as_array().expect("cases array").clone();
    assert!(!cases.is_empty(), "{rel} has no cases");
    cases
}

fn report(name: &str, checked: usize, failures: &[String]) {
    assert!(checked > 0, "{name}: no vectors checked");
    assert!(
        failures.is_empty(),
        "{name}: {} of {checked} vectors failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

fn str_of<'a>(case: &'a Value, key: &str) -> &'a str {
    case[key]
        .as_str()
        .unwrap_or_else(|| panic!("{key} missing in {case}"))
}

fn dirs_in(rel: &str) -> Vec<PathBuf> {
    let root = conformance_dir().join(rel);
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(&root)
        .unwrap_or_else(|e| panic!("cannot list {}: {e}", root.display()))
        .map(|entry| entry.expect("dir entry").path())
        .filter(|p| p.is_dir())
        .collect();
    dirs.sort();
    assert!(!dirs.is_empty(), "no cases under {}", root.display());
    dirs
}

#[test]
fn parser_cases_dump_byte_exact() {
    let mut failures = Vec::new();
    let dirs = dirs_in("parser");
    for dir in &dirs {
        let id = dir
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("?")
            .to_string();
        let input = std::fs::read_to_string(dir.join("Dockerfile")).expect("Dockerfile");
        let expected = std::fs::read_to_string(dir.join("result")).expect("result");
        match parse(&input) {
            Ok(df) if df.dump() == expected => {}
            Ok(df) => failures.push(format!(
                "{id}: dump differs\n--- got\n{}--- want\n{expected}",
                df.dump()
            )),
            Err(e) => failures.push(format!("{id}: parse error {e}")),
        }
    }
    report("parser", dirs.len(), &failures);
}

#[test]
fn parser_negative_cases_fail() {
    let mut failures = Vec::new();
    let dirs = dirs_in("parser-negative");
    for dir in &dirs {
        let id = dir
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("?")
            .to_string();
        let input = std::fs::read_to_string(dir.join("Dockerfile")).expect("Dockerfile");
        if let Ok(df) = parse(&input) {
            failures.push(format!("{id}: parsed but must fail: {}", df.dump()));
        }
    }
    report("parser-negative", dirs.len(), &failures);
}

#[test]
fn parser_misc_vectors() {
    let cases = load_cases("parser-misc/parser-misc.json");
    let mut failures = Vec::new();
    for case in &cases {
        let id = str_of(case, "id");
        match str_of(case, "kind") {
            "line_numbers" => {
                let df = match parse(str_of(case, "dockerfile")) {
                    Ok(df) => df,
                    Err(e) => {
                        failures.push(format!("{id}: {e}"));
                        continue;
                    }
                };
                let expected = &case["expected"];
                let children: Vec<(u64, u64)> = df
                    .instructions
                    .iter()
                    .map(|n| (n.span.start_line as u64, n.span.end_line as u64))
                    .collect();
                let want: Vec<(u64, u64)> = expected["children"]
                    .as_array()
                    .expect("children")
                    .iter()
                    .map(|p| (p[0].as_u64().unwrap_or(0), p[1].as_u64().unwrap_or(0)))
                    .collect();
                if children != want {
                    failures.push(format!("{id}: children {children:?} != {want:?}"));
                }
                let first = children.first().map(|c| c.0);
                let last = children.last().map(|c| c.1);
                if first != expected["start_line"].as_u64() || last != expected["end_line"].as_u64()
                {
                    failures.push(format!("{id}: start/end {first:?}/{last:?}"));
                }
                if let Some(r) = case["ref_result"].as_str()
                    && df.dump() != r
                {
                    failures.push(format!("{id}: dump {}", df.dump()));
                }
            }
            "warnings" => match parse(str_of(case, "dockerfile")) {
                Err(e) => failures.push(format!("{id}: {e}")),
                Ok(df) => {
                    let expected = &case["expected"];
                    let count = expected["count"].as_u64().unwrap_or(0) as usize;
                    if df.warnings.len() != count {
                        failures.push(format!("{id}: {} warnings", df.warnings.len()));
                    }
                    for (i, subs) in expected["contains"]
                        .as_array()
                        .expect("contains")
                        .iter()
                        .enumerate()
                    {
                        let text = df.warnings.get(i).map(|w| w.message.as_str()).unwrap_or("");
                        for sub in subs.as_array().expect("list") {
                            let sub = sub.as_str().unwrap_or("");
                            if !text.contains(sub) {
                                failures.push(format!("{id}: warning {i} {text:?} lacks {sub:?}"));
                            }
                        }
                    }
                    if let Some(detail) = expected["detail_contains"].as_str()
                        && !df
                            .warnings
                            .iter()
                            .all(|w| w.detail.as_deref().unwrap_or("").contains(detail))
                    {
                        failures.push(format!("{id}: detail lacks {detail:?}"));
                    }
                    if let Some(refs) = case["ref_warnings"].as_array() {
                        for (i, r) in refs.iter().enumerate() {
                            let line = r["line"].as_u64();
                            let got = df.warnings.get(i).map(|w| w.line as u64);
                            if line.is_some() && got != line {
                                failures
                                    .push(format!("{id}: warning {i} line {got:?} != {line:?}"));
                            }
                        }
                    }
                    if let Some(r) = case["ref_result"].as_str()
                        && df.dump() != r
                    {
                        failures.push(format!("{id}: dump {}", df.dump()));
                    }
                }
            },
            "error" => {
                let mut input = String::new();
                for part in case["dockerfile_parts"].as_array().expect("parts") {
                    if let Some(text) = part["text"].as_str() {
                        input.push_str(text);
                    } else {
                        let count = part["count"].as_u64().unwrap_or(0) as usize;
                        input.push_str(&part["repeat"].as_str().unwrap_or("").repeat(count));
                    }
                }
                match parse(&input) {
                    Ok(_) => failures.push(format!("{id}: parsed but must fail")),
                    Err(e) => {
                        let want = case["expected"]["error"].as_str().unwrap_or("");
                        if !e.message.contains(want) {
                            failures.push(format!("{id}: message {:?}", e.message));
                        }
                    }
                }
            }
            "dump" => {
                let result = parse(str_of(case, "dockerfile"));
                match (result, case["ref_result"].as_str()) {
                    (Ok(df), Some(want)) if df.dump() == want => {}
                    (Ok(df), Some(want)) => {
                        failures.push(format!("{id}: got {:?} want {want:?}", df.dump()))
                    }
                    (Err(e), Some(_)) => failures.push(format!("{id}: error {e}")),
                    (Ok(df), None) => failures.push(format!("{id}: must fail, got {}", df.dump())),
                    (Err(_), None) => {}
                }
            }
            other => failures.push(format!("{id}: unknown kind {other}")),
        }
    }
    report("parser-misc", cases.len(), &failures);
}

#[test]
fn heredoc_vectors() {
    let cases = load_cases("heredoc/heredoc.json");
    let mut failures = Vec::new();
    for case in &cases {
        let id = str_of(case, "id");
        let expected = &case["expected"];
        match str_of(case, "kind") {
            "extract" => match parse(str_of(case, "dockerfile")) {
                Err(e) => failures.push(format!("{id}: {e}")),
                Ok(df) => {
                    let got: Vec<Value> = df
                        .instructions
                        .iter()
                        .map(|n| {
                            if n.heredocs.is_empty() {
                                Value::Null
                            } else {
                                Value::Array(
                                    n.heredocs
                                        .iter()
                                        .map(|h| {
                                            serde_json::json!({
                                                "name": h.name, "content": h.content,
                                                "expand": h.expand, "chomp": h.chomp,
                                                "file_descriptor": h.file_descriptor,
                                            })
                                        })
                                        .collect(),
                                )
                            }
                        })
                        .collect();
                    if &Value::Array(got.clone()) != expected {
                        failures.push(format!("{id}: heredocs {got:?}"));
                    }
                    if let Some(r) = case["ref_result"].as_str()
                        && df.dump() != r
                    {
                        failures.push(format!("{id}: dump {:?}", df.dump()));
                    }
                }
            },
            "chomp" => {
                let got = chomp_heredoc_content(str_of(case, "input"));
                if Some(got.as_str()) != expected.as_str() {
                    failures.push(format!("{id}: chomp {got:?}"));
                }
            }
            "word" => {
                let got = parse_heredoc_word(str_of(case, "input"));
                let ok = match (expected["result"].as_str().unwrap_or(""), &got) {
                    ("heredoc", Ok(Some(m))) => {
                        let r = &case["ref_heredoc"];
                        Some(m.name.as_str()) == expected["name"].as_str()
                            && (r.is_null()
                                || (Some(m.chomp) == r["chomp"].as_bool()
                                    && Some(m.expand) == r["expand"].as_bool()
                                    && Some(u64::from(m.file_descriptor))
                                        == r["file_descriptor"].as_u64()))
                    }
                    ("error", Err(_)) => true,
                    ("none", Ok(None)) => true,
                    _ => false,
                };
                if !ok {
                    failures.push(format!("{id}: got {got:?}"));
                }
            }
            "line" => {
                let got: Vec<String> = heredocs_from_line(str_of(case, "input"))
                    .map(|ms| ms.into_iter().map(|m| m.name).collect())
                    .unwrap_or_else(|e| vec![format!("error: {e}")]);
                let want: Vec<String> = expected
                    .as_array()
                    .expect("list")
                    .iter()
                    .map(|v| v.as_str().unwrap_or("").to_string())
                    .collect();
                if got != want {
                    failures.push(format!("{id}: got {got:?}"));
                }
            }
            other => failures.push(format!("{id}: unknown kind {other}")),
        }
    }
    report("heredoc", cases.len(), &failures);
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .expect("array")
        .iter()
        .map(|s| s.as_str().unwrap_or("").to_string())
        .collect()
}

#[test]
fn line_parser_vectors() {
    let cases = load_cases("line-parsers/line-parsers.json");
    let mut failures = Vec::new();
    for case in &cases {
        let id = str_of(case, "id");
        let input = str_of(case, "input");
        let expected = &case["expected"];
        match str_of(case, "kind") {
            "name_val" => {
                let got = parse_name_val(input, str_of(case, "instruction"), '\\');
                match (got, expected["error"].as_bool().unwrap_or(false)) {
                    (Ok((pairs, legacy)), false) => {
                        let values = name_val_values(&pairs, legacy);
                        if values != strings(&expected["values"]) {
                            failures.push(format!("{id}: {values:?}"));
                        }
                    }
                    (Err(_), true) => {}
                    (got, _) => failures.push(format!("{id}: got {got:?}")),
                }
            }
            "words" => {
                let got = split_words(input, '\\');
                if got != strings(&expected["words"]) {
                    failures.push(format!("{id}: {got:?}"));
                }
            }
            "json_array" => {
                let got = parse_json_array(input);
                let ok = match (&got, expected["error"].as_str()) {
                    (JsonArray::NotStringArray, Some("not_string_array")) => true,
                    (JsonArray::Strings(values), None) => *values == strings(&expected["values"]),
                    _ => false,
                };
                if !ok {
                    failures.push(format!("{id}: {got:?}"));
                }
            }
            other => failures.push(format!("{id}: unknown kind {other}")),
        }
        // The same input through the public parser.
        let r = &case["ref_instruction"];
        if let Some(dockerfile) = r["dockerfile"].as_str() {
            match (parse(dockerfile), r["result"].as_str()) {
                (Ok(df), Some(want)) if df.dump() == want => {}
                (Err(_), None) if r["parse_error"].as_bool() == Some(true) => {}
                (got, _) => failures.push(format!(
                    "{id} (ref_instruction): got {:?}",
                    got.map(|d| d.dump())
                )),
            }
        }
    }
    report("line-parsers", cases.len(), &failures);
}

fn check_lookup(id: &str, got: &DirectiveLookup, expected: &Value, failures: &mut Vec<String>) {
    let mut fail = |what: &str| failures.push(format!("{id}: {what} mismatch, got {got:?}"));
    if let Some(found) = expected["found"].as_bool()
        && found != got.found
    {
        fail("found");
    }
    if let Some(r) = expected["ref"].as_str()
        && r != got.reference
    {
        fail("ref");
    }
    if let Some(c) = expected["cmdline"].as_str()
        && c != got.cmdline
    {
        fail("cmdline");
    }
    if let Some(l) = expected["start_line"].as_u64()
        && l != got.start_line as u64
    {
        fail("start_line");
    }
    if let Some(l) = expected["end_line"].as_u64()
        && l != got.end_line as u64
    {
        fail("end_line");
    }
}

#[test]
fn directive_vectors() {
    let cases = load_cases("directives/directives.json");
    let mut failures = Vec::new();
    for case in &cases {
        let id = str_of(case, "id");
        let input = str_of(case, "input");
        let expected = &case["expected"];
        match str_of(case, "kind") {
            "parse_all" => match parse_all(input) {
                Ok(directives) => {
                    let got: Vec<Value> = directives
                        .iter()
                        .map(|d| serde_json::json!({"name": d.name, "value": d.value}))
                        .collect();
                    if Value::Array(got.clone()) != expected["directives"] {
                        failures.push(format!("{id}: {got:?}"));
                    }
                }
                Err(e) => failures.push(format!("{id}: {e}")),
            },
            "detect_syntax" => check_lookup(id, &detect_syntax(input), expected, &mut failures),
            "parse_directive" => check_lookup(
                id,
                &parse_directive(str_of(case, "key"), input),
                expected,
                &mut failures,
            ),
            other => failures.push(format!("{id}: unknown kind {other}")),
        }
    }
    report("directives", cases.len(), &failures);
}
