//! `stowage lint` end to end: formats, exit codes, the context argument.

use std::path::PathBuf;
use std::process::Command;

fn stowage() -> Command {
    Command::new(env!("CARGO_BIN_EXE_stowage"))
}

fn seed(name: &str) -> PathBuf {
    PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../tests-data/lint/seed"
    ))
    .join(name)
}

#[test]
fn lint_text_json_sarif_and_exit_codes() {
    let context = tempfile::tempdir().expect("tempdir");
    std::fs::write(context.path().join(".dockerignore"), ".git\n").expect("write");
    let step1 = seed("step1.Dockerfile");
    let out = stowage()
        .arg("lint")
        .arg("-f")
        .arg(&step1)
        .arg(context.path())
        .output()
        .expect("run");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "warnings only: exit 0\n{text}");
    assert!(text.contains(":3:1: warning STW003"), "{text}");
    let strict = stowage()
        .arg("lint")
        .arg("--strict")
        .arg("-f")
        .arg(&step1)
        .arg(context.path())
        .output()
        .expect("run");
    assert_eq!(strict.status.code(), Some(1));
    let json = stowage()
        .args(["lint", "--format", "json", "-f"])
        .arg(&step1)
        .arg(context.path())
        .output()
        .expect("run");
    let value: serde_json::Value = serde_json::from_slice(&json.stdout).expect("json");
    assert!(
        value["findings"]
            .as_array()
            .is_some_and(|f| f.iter().any(|f| f["rule"] == "STW010"))
    );
    let sarif = stowage()
        .args(["lint", "--format", "sarif", "-f"])
        .arg(&step1)
        .arg(context.path())
        .output()
        .expect("run");
    let value: serde_json::Value = serde_json::from_slice(&sarif.stdout).expect("sarif");
    assert_eq!(value["version"], "2.1.0");
    let secret = stowage()
        .args(["lint", "--build-arg", "GITHUB_TOKEN=ghp_x", "-f", "-"])
        .arg(context.path())
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut child| {
            use std::io::Write as _;
            child
                .stdin
                .take()
                .expect("stdin")
                .write_all(b"FROM alpine:3\nARG GITHUB_TOKEN\nUSER app\n")?;
            child.wait_with_output()
        })
        .expect("run");
    assert_eq!(
        secret.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&secret.stdout)
    );
}
