//! Output formats: text (`file:line:col: severity rule message` + fix), JSON
//! and SARIF 2.1.0.

use serde_json::{Value, json};

use crate::rules::RULES;
use crate::{LintReport, Severity};

/// Plain text, one finding per line followed by its fix; unjudged items last.
pub fn render_text(report: &LintReport, file: &str) -> String {
    let mut out = String::new();
    for f in &report.findings {
        out.push_str(&format!(
            "{file}:{}:{}: {} {} ({}): {}\n    fix: {}\n",
            f.span.start_line,
            f.span.start_column,
            f.severity.as_str(),
            f.rule,
            f.name,
            f.message,
            f.fix
        ));
    }
    for u in &report.unjudged {
        out.push_str(&format!("{file}: not judged: {u}\n"));
    }
    out
}

/// JSON: `{"file", "findings": [...], "unjudged": [...]}`.
pub fn render_json(report: &LintReport, file: &str) -> String {
    let value = json!({
        "file": file,
        "findings": report.findings,
        "unjudged": report.unjudged,
    });
    serde_json::to_string_pretty(&value).unwrap_or_default() + "\n"
}

fn level(severity: Severity) -> &'static str {
    match severity {
        Severity::Error => "error",
        Severity::Warning => "warning",
        Severity::Info => "note",
    }
}

/// SARIF 2.1.0 log with one run.
pub fn render_sarif(report: &LintReport, file: &str) -> String {
    let rules: Vec<Value> = RULES
        .iter()
        .map(|r| {
            json!({
                "id": r.id,
                "name": r.name,
                "shortDescription": {"text": r.description},
                "defaultConfiguration": {"level": level(r.severity)},
                "properties": {"seedTip": r.tip, "hadolint": r.hadolint},
            })
        })
        .collect();
    let results: Vec<Value> = report
        .findings
        .iter()
        .map(|f| {
            json!({
                "ruleId": f.rule,
                "ruleIndex": RULES.iter().position(|r| r.id == f.rule).unwrap_or(0),
                "level": level(f.severity),
                "message": {"text": format!("{} Fix: {}", f.message, f.fix)},
                "locations": [{
                    "physicalLocation": {
                        "artifactLocation": {"uri": file},
                        "region": {
                            "startLine": f.span.start_line,
                            "startColumn": f.span.start_column,
                            "endLine": f.span.end_line,
                            "endColumn": f.span.end_column.max(1),
                        }
                    }
                }],
                "properties": {"seedTip": f.tip, "fix": f.fix},
            })
        })
        .collect();
    let value = json!({
        "$schema": "https://json.schemastore.org/sarif-2.1.0.json",
        "version": "2.1.0",
        "runs": [{
            "tool": {"driver": {
                "name": "stowage-lint",
                "version": env!("CARGO_PKG_VERSION"),
                "informationUri": "https://example.invalid/stowage",
                "rules": rules,
            }},
            "results": results,
            "properties": {"unjudged": report.unjudged},
        }],
    });
    serde_json::to_string_pretty(&value).unwrap_or_default() + "\n"
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{LintOptions, lint};

    #[test]
    fn sarif_has_the_required_structure() {
        let report = lint(
            "FROM ubuntu\nMAINTAINER me\nRUN cd /x\n",
            &LintOptions::default(),
        )
        .expect("parses");
        let sarif: Value =
            serde_json::from_str(&render_sarif(&report, "Dockerfile")).expect("json");
        assert_eq!(sarif["version"], "2.1.0");
        let run = &sarif["runs"][0];
        assert!(run["tool"]["driver"]["name"].is_string());
        let rules = run["tool"]["driver"]["rules"].as_array().expect("rules");
        let results = run["results"].as_array().expect("results");
        assert!(!results.is_empty());
        for result in results {
            assert!(result["message"]["text"].is_string());
            let id = result["ruleId"].as_str().expect("ruleId");
            let index = result["ruleIndex"].as_u64().expect("ruleIndex") as usize;
            assert_eq!(rules[index]["id"], id);
            assert!(matches!(
                result["level"].as_str(),
                Some("error" | "warning" | "note")
            ));
            let region = &result["locations"][0]["physicalLocation"]["region"];
            assert!(region["startLine"].as_u64().expect("startLine") >= 1);
        }
        let text = render_text(&report, "Dockerfile");
        assert!(text.contains("Dockerfile:1:1: warning STW009"), "{text}");
        let json: Value = serde_json::from_str(&render_json(&report, "Dockerfile")).expect("json");
        assert_eq!(json["findings"][0]["rule"], "STW009");
    }
}
