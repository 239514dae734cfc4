//! The seed's walkthrough as a test: the first Dockerfile gets a finding for
//! every problem the seed fixes later, and each improved Dockerfile loses
//! them one by one. The Dockerfiles live in tests-data/lint/seed.

use std::path::PathBuf;

use crate::{LintOptions, lint};

fn data(name: &str) -> PathBuf {
    PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../../tests-data/lint"
    ))
    .join(name)
}

fn rules_of(file: &str, context: Option<PathBuf>) -> Vec<String> {
    let source = std::fs::read_to_string(data(file))
        .unwrap_or_else(|e| panic!("test data {file} missing: {e}"));
    let options = LintOptions {
        context_dir: context,
        ..LintOptions::default()
    };
    let report = lint(&source, &options).unwrap_or_else(|e| panic!("{file} does not parse: {e}"));
    report
        .findings
        .iter()
        .map(|f| format!("{}@{}", f.rule, f.span.start_line))
        .collect()
}

fn set(items: &[&str]) -> Vec<String> {
    let mut v: Vec<String> = items.iter().map(|s| s.to_string()).collect();
    v.sort();
    v
}

fn sorted(mut v: Vec<String>) -> Vec<String> {
    v.sort();
    v
}

#[test]
fn seed_walkthrough_loses_findings_step_by_step() {
    // Step 1: every problem the seed goes on to fix.
    let step1 = set(&[
        "STW009@1", // ubuntu:latest (Step 3 moves to python:2.7-alpine)
        "STW017@1", // no USER: runs as root
        "LegacyKeyValueFormat@2",
        "STW003@3", // apt lists left in the update layer
        "STW001@4", // two RUNs in a row (Step 2 merges them)
        "STW002@4", // apt-get update in another RUN than the install
        "STW007@4", // no --no-install-recommends
        "STW008@4", // unpinned apt packages
        "STW011@4", // build-essential / python-dev in the final image
        "STW005@7", // pip cache kept
        "STW010@7", // pip install after COPY . (Step 4 copies requirements.txt first)
    ]);
    assert_eq!(sorted(rules_of("seed/step1.Dockerfile", None)), step1);
    // Step 2: one RUN: STW001 and STW002 are gone.
    let step2 = set(&[
        "STW009@1",
        "STW017@1",
        "LegacyKeyValueFormat@2",
        "STW003@3",
        "STW007@3",
        "STW008@3",
        "STW011@3",
        "STW005@6",
        "STW010@6",
    ]);
    assert_eq!(sorted(rules_of("seed/step2.Dockerfile", None)), step2);
    // Step 3: python:2.7-alpine: no latest, no apt, no toolchain.
    let step3 = set(&["STW017@1", "LegacyKeyValueFormat@2", "STW005@5", "STW010@5"]);
    assert_eq!(sorted(rules_of("seed/step3.Dockerfile", None)), step3);
    // Step 4: requirements.txt copied first: STW010 is gone.
    let step4 = set(&["STW017@1", "LegacyKeyValueFormat@2", "STW005@4"]);
    assert_eq!(sorted(rules_of("seed/step4.Dockerfile", None)), step4);
    // Step 5: USER root at the end is flagged (with hadolint's DL3002).
    let step5 = set(&["STW009@1", "STW003@4", "STW007@4", "STW008@4", "STW017@7"]);
    assert_eq!(sorted(rules_of("seed/step5.Dockerfile", None)), step5);
    // Everything applied: clean.
    assert_eq!(
        rules_of("seed/fixed.Dockerfile", None),
        Vec::<String>::new()
    );
}

#[test]
fn requirements_are_checked_when_the_context_has_them() {
    let context = tempfile::tempdir().expect("tempdir");
    std::fs::write(
        context.path().join("requirements.txt"),
        "mysql-connector-python\nflask==3.0.0\n",
    )
    .expect("write");
    std::fs::write(context.path().join(".dockerignore"), ".git\n").expect("write");
    let rules = rules_of("seed/step4.Dockerfile", Some(context.path().to_path_buf()));
    assert!(rules.contains(&"STW008@4".to_string()), "{rules:?}");
    let source = std::fs::read_to_string(data("seed/step4.Dockerfile")).expect("read");
    let report = lint(&source, &LintOptions::default()).expect("parses");
    assert!(
        report
            .unjudged
            .iter()
            .any(|u| u.contains("requirements.txt")),
        "{:?}",
        report.unjudged
    );
}

#[test]
fn context_without_dockerignore_and_ignored_copies() {
    let context = tempfile::tempdir().expect("tempdir");
    std::fs::create_dir_all(context.path().join(".git")).expect("mkdir");
    std::fs::create_dir_all(context.path().join("node_modules")).expect("mkdir");
    let rules = rules_of("seed/step1.Dockerfile", Some(context.path().to_path_buf()));
    assert!(rules.contains(&"STW012@1".to_string()), "{rules:?}");
    std::fs::write(context.path().join(".dockerignore"), "requirements.txt\n").expect("write");
    let rules = rules_of("seed/step4.Dockerfile", Some(context.path().to_path_buf()));
    assert!(
        rules.contains(&"CopyIgnoredFile@3".to_string()),
        "{rules:?}"
    );
    assert!(!rules.iter().any(|r| r.starts_with("STW012")), "{rules:?}");
}

#[test]
fn other_rules_and_build_checks() {
    let rules = sorted(rules_of("seed/misc.Dockerfile", None));
    let want = set(&[
        "InvalidDefaultArgInFrom@2",
        "StageNameCasing@2",
        "ConsistentInstructionCasing@3",
        "DuplicateStageName@3",
        "STW017@3",
        "SecretsUsedInArgOrEnv@4",
        "STW004@5",
        "STW008@5",
        "STW019@5",
        "STW006@6",
        "STW008@6",
        "STW001@7",
        "STW008@7",
        "STW001@8",
        "STW006@8",
        "STW015@9",
        "WorkdirRelativePath@9",
        "ExposeInvalidFormat@10",
        "ExposeProtoCasing@10",
        "STW014@12",
        "STW013@14",
        "JSONArgsRecommended@15",
        "MultipleInstructionsDisallowed@15",
        "MaintainerDeprecated@17",
    ]);
    assert_eq!(rules, want);
    let rules = sorted(rules_of("seed/multistage.Dockerfile", None));
    assert_eq!(
        rules,
        set(&[
            "STW009@1",
            "STW007@2",
            "STW008@2",
            "STW014@3",
            "STW016@4",
            "STW009@6",
            "STW017@6",
            "JSONArgsRecommended@9"
        ])
    );
}

#[test]
fn build_arg_secrets_and_more_checks() {
    let source = "ARG GITHUB_TOKEN\nFROM --platform=linux/amd64 alpine:3 AS context\nFROM --platform=$TARGETPLATFORM alpine:3\nFROM ${NOPE} AS x\nFROM scratch\nCOPY $undefined /x\nUSER 1000\n";
    let mut options = LintOptions::default();
    options
        .build_args
        .insert("GITHUB_TOKEN".into(), "ghp_abc".into());
    let report = lint(source, &options).expect("parses");
    let ids: Vec<String> = report
        .findings
        .iter()
        .map(|f| format!("{}@{}", f.rule, f.span.start_line))
        .collect();
    for want in [
        "STW018@1",
        "SecretsUsedInArgOrEnv@1",
        "FromPlatformFlagConstDisallowed@2",
        "ReservedStageName@2",
        "RedundantTargetPlatform@3",
        "UndefinedArgInFrom@4",
        "UndefinedVar@6",
    ] {
        assert!(ids.contains(&want.to_string()), "missing {want} in {ids:?}");
    }
    assert!(report.has_at_least(crate::Severity::Error));
}

#[test]
fn never_fails_on_parsable_input() {
    for source in [
        "FROM a\nRUN <<EOF\napt-get install x | y\nEOF\n",
        "CMD x\n",
        "FROM a\nRUN [\"sh\", \"-c\", \"cd / && apt-get install q\"]\n",
        "FROM a\nONBUILD RUN x\nHEALTHCHECK NONE\nSHELL [\"pwsh\"]\nRUN a | b\n",
        "FROM a\nRUN \"'\\\n",
    ] {
        let _ = lint(source, &LintOptions::default());
    }
}
