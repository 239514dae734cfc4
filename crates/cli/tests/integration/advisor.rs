//! The advisor end to end: `stowage analyze` (figures checked against
//! exactly constructed waste and against dive), its HTML page in headless
//! Chromium, `--ci` exit codes, errors for unknown and corrupt images,
//! `stowage diff`, `stowage build --check` and the end-of-build report, and
//! the seed's walkthrough on a local Debian base.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde_json::Value;

use crate::support::cli::{Ran, require_root, run, run_ok, stowage};
use crate::support::docker::services_script;
use crate::support::seed::{pip_trusted_hosts, seed_dockerfiles};

const DEBIAN_TAR: &str = "/var/cache/stowage-test/debian-bookworm-minbase.tar";
const DEBIAN: &str = "localhost/debian:bookworm";

/// A store with the Debian base imported as [`DEBIAN`].
fn debian_store() -> tempfile::TempDir {
    require_root();
    if !Path::new(DEBIAN_TAR).exists() {
        let out = Command::new("bash")
            .arg(services_script())
            .arg("base-rootfs")
            .stdin(Stdio::null())
            .output()
            .expect("run scripts/services.sh base-rootfs");
        assert!(
            out.status.success() && Path::new(DEBIAN_TAR).exists(),
            "scripts/services.sh base-rootfs failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let root = tempfile::tempdir().expect("tempdir");
    let mut cmd = stowage(root.path());
    cmd.args(["import", DEBIAN_TAR, DEBIAN]);
    run_ok(cmd);
    root
}

fn build(root: &Path, ctx: &Path, dockerfile: &str, tag: &str, extra: &[&str]) -> Ran {
    fs::write(ctx.join("Dockerfile"), dockerfile).expect("write Dockerfile");
    let mut cmd = stowage(root);
    cmd.args(["build", "--progress", "plain", "-t", tag])
        .args(extra)
        .arg(ctx);
    run(cmd)
}

fn build_ok(root: &Path, ctx: &Path, dockerfile: &str, tag: &str, extra: &[&str]) -> Ran {
    let ran = build(root, ctx, dockerfile, tag, extra);
    assert_eq!(ran.code, Some(0), "build of\n{dockerfile}\n{}", ran.both());
    ran
}

fn analyze_json(root: &Path, image: &str) -> Value {
    let mut cmd = stowage(root);
    cmd.args(["analyze", "--format", "json", image]);
    let ran = run_ok(cmd);
    serde_json::from_str(&ran.stdout)
        .unwrap_or_else(|e| panic!("analyze json: {e}\n{}", ran.stdout))
}

/// Deterministic, poorly compressible bytes.
fn noise(len: usize, seed: u32) -> Vec<u8> {
    let mut state = seed.wrapping_mul(2_654_435_761).wrapping_add(1);
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 17;
            state ^= state << 5;
            (state & 0xff) as u8
        })
        .collect()
}

fn command_path(name: &str) -> PathBuf {
    let out = Command::new("bash")
        .args(["-c", &format!("command -v {name}")])
        .output()
        .expect("run bash");
    let path = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    assert!(
        out.status.success() && !path.is_empty(),
        "{name} is not installed: run scripts/services.sh deps"
    );
    PathBuf::from(path)
}

/// Layers: base, COPY big (1 MB), RUN chmod (1 MB copy-up), RUN that deletes
/// big and leaves a 300 kB pip cache, COPY conf v1 (500 kB), COPY conf v2 (200 kB).
const WASTEFUL: &str = "FROM localhost/debian:bookworm\n\
COPY big.bin /data/big.bin\n\
RUN chmod 755 /data/big.bin\n\
RUN mkdir -p /root/.cache/pip && head -c 300000 /data/big.bin > /root/.cache/pip/wheel && rm /data/big.bin\n\
COPY v1/app.conf /etc/app.conf\n\
COPY v2/app.conf /etc/app.conf\n";

fn wasteful_context(ctx: &Path) {
    fs::create_dir_all(ctx.join("v1")).expect("mkdir");
    fs::create_dir_all(ctx.join("v2")).expect("mkdir");
    fs::write(ctx.join("big.bin"), noise(1_000_000, 1)).expect("write");
    fs::write(ctx.join("v1/app.conf"), noise(500_000, 2)).expect("write");
    fs::write(ctx.join("v2/app.conf"), noise(200_000, 3)).expect("write");
}

#[test]
fn analyze_measures_exact_waste_matches_dive_and_renders_html() {
    let root = debian_store();
    let ctx = tempfile::tempdir().expect("tempdir");
    wasteful_context(ctx.path());
    let tag = "localhost/advisor-waste:1";
    build_ok(root.path(), ctx.path(), WASTEFUL, tag, &[]);

    let analysis = analyze_json(root.path(), tag);
    let totals = &analysis["totals"];
    let layers = analysis["layers"].as_array().expect("layers");
    assert_eq!(layers.len(), 6);
    // big.bin twice (COPY, chmod copy-up) + conf v1; the surviving conf v2 is not waste
    assert_eq!(totals["reclaimable_bytes"], 1_000_000 + 1_000_000 + 500_000);
    assert_eq!(totals["metadata_rewrite_bytes"], 1_000_000);
    assert_eq!(totals["dive_wasted_bytes"], 2_500_000 + 200_000);
    assert_eq!(layers[1]["files_added"], 1);
    assert_eq!(layers[2]["files_changed"], 1);
    assert_eq!(layers[3]["files_removed"], 1);
    assert_eq!(layers[5]["files_changed"], 1);
    assert_eq!(layers[3]["cache_bytes"], 300_000);
    assert!(
        layers[3]["created_by"]
            .as_str()
            .is_some_and(|c| c.contains("rm /data/big.bin")),
        "{}",
        layers[3]
    );
    let rewrite = &analysis["metadata_rewrites"][0];
    assert_eq!(rewrite["path"], "data/big.bin");
    assert_eq!(rewrite["changed"], serde_json::json!(["mode 644->755"]));
    assert!(
        analysis["leftovers"]
            .as_array()
            .expect("leftovers")
            .iter()
            .any(|l| l["location"] == "/root/.cache/pip"
                && l["bytes"] == 300_000
                && l["layer"] == 3),
        "{}",
        analysis["leftovers"]
    );
    // JSON output is stable
    assert_eq!(analysis, analyze_json(root.path(), tag));

    // --ci with dive's defaults: efficiency passes, the user layers' waste
    // (2.5 MB of 3 MB) fails with exit 2
    let mut cmd = stowage(root.path());
    cmd.args(["analyze", "--ci", tag]);
    let ran = run(cmd);
    assert_eq!(ran.code, Some(2), "{}", ran.both());
    assert!(
        ran.stdout.contains("PASS: lowestEfficiency"),
        "{}",
        ran.both()
    );
    assert!(
        ran.stderr.contains("rule highestUserWastedPercent failed"),
        "{}",
        ran.both()
    );
    let mut cmd = stowage(root.path());
    cmd.args([
        "analyze",
        "--ci",
        "--highest-user-wasted-percent",
        "0.9",
        tag,
    ]);
    run_ok(cmd);
    let mut cmd = stowage(root.path());
    cmd.args([
        "analyze",
        "--ci",
        "--highest-user-wasted-percent",
        "0.9",
        "--highest-wasted-bytes",
        "1MB",
        tag,
    ]);
    let ran = run(cmd);
    assert_eq!(ran.code, Some(2), "{}", ran.both());
    assert!(
        ran.stderr.contains("rule highestWastedBytes failed"),
        "{}",
        ran.both()
    );

    // dive on the saved image reproduces our per-layer sizes
    let dive = command_path("dive");
    let work = tempfile::tempdir().expect("tempdir");
    let archive = work.path().join("image.tar");
    let mut cmd = stowage(root.path());
    cmd.args(["save", "-o"]).arg(&archive).arg(tag);
    run_ok(cmd);
    let dive_json = work.path().join("dive.json");
    let out = Command::new(&dive)
        .args(["--ci", "--json"])
        .arg(&dive_json)
        .arg(format!("docker-archive://{}", archive.display()))
        .stdin(Stdio::null())
        .output()
        .expect("run dive");
    let dive_report: Value = serde_json::from_slice(&fs::read(&dive_json).unwrap_or_else(|e| {
        panic!(
            "dive wrote no JSON ({e}): {}",
            String::from_utf8_lossy(&out.stderr)
        )
    }))
    .expect("dive json");
    let dive_layers = dive_report["layer"].as_array().expect("dive layers");
    assert_eq!(dive_layers.len(), layers.len());
    for (ours, theirs) in layers.iter().zip(dive_layers) {
        assert_eq!(ours["diff_id"], theirs["digestId"], "layer order");
        assert_eq!(
            ours["content_bytes"], theirs["sizeBytes"],
            "layer {} size",
            ours["index"]
        );
    }
    assert_eq!(dive_report["image"]["sizeBytes"], totals["content_bytes"]);
    assert_eq!(
        dive_report["image"]["inefficientBytes"], totals["dive_wasted_bytes"],
        "dive counts the surviving copy too"
    );

    // the HTML page renders in headless Chromium
    let chromium = command_path("chromium");
    let page = work.path().join("report.html");
    let mut cmd = stowage(root.path());
    cmd.args(["analyze", "--html"]).arg(&page).arg(tag);
    run_ok(cmd);
    let html = fs::read_to_string(&page).expect("read page");
    assert!(
        !html.contains("<script") && !html.contains("<link"),
        "self-contained"
    );
    let url = format!("file://{}", page.display());
    let out = Command::new(&chromium)
        .args(["--headless", "--no-sandbox", "--disable-gpu", "--dump-dom"])
        .arg(&url)
        .stdin(Stdio::null())
        .output()
        .expect("run chromium");
    let dom = String::from_utf8_lossy(&out.stdout);
    assert!(
        dom.contains("id=\"layer-chart\""),
        "chromium did not render the page: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(dom.matches("class=\"layer-bar kept\"").count(), 6);
    assert!(dom.contains("/data/big.bin"), "wasted-files table");
    let shot = work.path().join("shot.png");
    let out = Command::new(&chromium)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--window-size=1200,900",
        ])
        .arg(format!("--screenshot={}", shot.display()))
        .arg(&url)
        .stdin(Stdio::null())
        .output()
        .expect("run chromium");
    let png = fs::read(&shot).unwrap_or_else(|e| {
        panic!(
            "no screenshot ({e}): {}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    assert!(
        png.starts_with(b"\x89PNG") && png.len() > 5_000,
        "{} bytes",
        png.len()
    );
}

#[test]
fn analyze_fails_clearly_on_unknown_and_corrupt_images() {
    require_root();
    let root = tempfile::tempdir().expect("tempdir");
    let ctx = tempfile::tempdir().expect("tempdir");
    fs::write(ctx.path().join("payload"), noise(200_000, 9)).expect("write");
    let tag = "localhost/advisor-corrupt:1";
    build_ok(
        root.path(),
        ctx.path(),
        "FROM scratch\nCOPY payload /payload\n",
        tag,
        &[],
    );

    let mut cmd = stowage(root.path());
    cmd.args(["analyze", "localhost/no-such-image:1"]);
    let ran = run(cmd);
    assert_eq!(ran.code, Some(1), "{}", ran.both());
    assert!(
        ran.stderr.contains("no-such-image") && ran.stderr.to_lowercase().contains("no such image"),
        "{}",
        ran.both()
    );

    let store = stowage_store::Store::open(root.path()).expect("open store");
    let details = store.image(tag).expect("image");
    let layer = &details.layers[0];
    let blob = store.blob_path(&layer.blob_digest);
    let mut bytes = fs::read(&blob).expect("read blob");
    let middle = bytes.len() / 2;
    for byte in &mut bytes[middle..middle + 64] {
        *byte ^= 0x5a;
    }
    fs::write(&blob, &bytes).expect("corrupt blob");
    let mut cmd = stowage(root.path());
    cmd.args(["analyze", tag]);
    let ran = run(cmd);
    assert_eq!(ran.code, Some(1), "{}", ran.both());
    assert!(
        ran.stderr.contains("corrupt") && ran.stderr.contains(&layer.blob_digest.to_string()),
        "{}",
        ran.both()
    );
    assert!(ran.stdout.is_empty(), "no partial report: {}", ran.stdout);
}

#[test]
fn diff_shows_sizes_layers_files_and_shared_layers() {
    let root = debian_store();
    let ctx = tempfile::tempdir().expect("tempdir");
    wasteful_context(ctx.path());
    let a = "localhost/advisor-diff:a";
    let b = "localhost/advisor-diff:b";
    build_ok(
        root.path(),
        ctx.path(),
        "FROM localhost/debian:bookworm\nCOPY big.bin /data/big.bin\n",
        a,
        &[],
    );
    build_ok(
        root.path(),
        ctx.path(),
        "FROM localhost/debian:bookworm\nCOPY v1/app.conf /etc/app.conf\nRUN rm -f /etc/issue\n",
        b,
        &[],
    );
    let mut cmd = stowage(root.path());
    cmd.args(["diff", "--format", "json", a, b]);
    let diff: Value = serde_json::from_str(&run_ok(cmd).stdout).expect("json");
    assert_eq!(diff["a"]["layers"], 2);
    assert_eq!(diff["b"]["layers"], 3);
    assert_eq!(diff["shared_layers"].as_array().map(Vec::len), Some(1));
    let paths = |key: &str| -> Vec<String> {
        diff[key]
            .as_array()
            .expect("list")
            .iter()
            .filter_map(|c| c["path"].as_str().map(str::to_owned))
            .collect()
    };
    assert!(
        paths("added").contains(&"/etc/app.conf".to_owned()),
        "{diff}"
    );
    assert!(
        paths("removed").contains(&"/data/big.bin".to_owned()),
        "{diff}"
    );
    assert_eq!(
        diff["removed_bytes"].as_u64().map(|b| b >= 1_000_000),
        Some(true)
    );
    let mut cmd = stowage(root.path());
    cmd.args(["diff", a, b]);
    let text = run_ok(cmd).stdout;
    assert!(text.contains("shared layers: 1"), "{text}");
    assert!(text.contains("- /data/big.bin"), "{text}");
    assert!(text.contains("+ /etc/app.conf"), "{text}");
}

#[test]
fn build_check_stops_on_errors_and_report_names_measured_costs() {
    let root = debian_store();
    let ctx = tempfile::tempdir().expect("tempdir");
    // an error-severity finding: nothing is built
    let tag = "localhost/advisor-check:1";
    let ran = build(
        root.path(),
        ctx.path(),
        "FROM localhost/debian:bookworm AS app\nRUN true\nFROM localhost/debian:bookworm AS app\nRUN true\n",
        tag,
        &["--check"],
    );
    assert_eq!(ran.code, Some(1), "{}", ran.both());
    assert!(ran.stderr.contains("DuplicateStageName"), "{}", ran.both());
    assert!(ran.stderr.contains("nothing was built"), "{}", ran.both());
    let mut cmd = stowage(root.path());
    cmd.args(["inspect", tag]);
    assert_ne!(run(cmd).code, Some(0), "the image must not exist");

    // warnings only: the build goes on and the report measures the cost
    let report_file = ctx.path().join("report.json");
    let dockerfile = "FROM localhost/debian:bookworm\nRUN apt-get update\nRUN mkdir -p /tmp/build && head -c 400000 /dev/urandom > /tmp/build/obj.o\n";
    let ran = build_ok(
        root.path(),
        ctx.path(),
        dockerfile,
        tag,
        &[
            "--check",
            "--report",
            report_file.to_str().expect("utf-8 path"),
        ],
    );
    assert!(
        ran.stderr.contains("STW003"),
        "lint ran first: {}",
        ran.both()
    );
    assert!(
        ran.stderr.contains("build report: 3 layers"),
        "{}",
        ran.both()
    );
    assert!(
        ran.stderr.contains("[STW003] line 2 left") && ran.stderr.contains("/var/lib/apt/lists"),
        "{}",
        ran.both()
    );
    let report: Value =
        serde_json::from_slice(&fs::read(&report_file).expect("report written")).expect("json");
    assert_eq!(report["layers"], 3);
    let findings = report["findings"].as_array().expect("findings");
    assert!(findings.len() <= 5 && !findings.is_empty(), "{report}");
    let apt = findings
        .iter()
        .find(|f| f["rule"] == "STW003")
        .unwrap_or_else(|| panic!("no STW003 finding: {report}"));
    assert_eq!(apt["line"], 2);
    assert!(
        apt["bytes"].as_u64().is_some_and(|b| b > 1_000_000),
        "{apt}"
    );
    let temp = findings
        .iter()
        .find(|f| f["line"] == 3)
        .unwrap_or_else(|| panic!("no finding for the temp file: {report}"));
    assert_eq!(temp["bytes"], 400_000);
    let steps = report["steps"].as_array().expect("steps");
    assert!(
        steps
            .iter()
            .any(|s| s["line"] == 2 && s["outcome"] == "built")
    );

    // the same build again: every step is a cache hit
    let ran = build_ok(root.path(), ctx.path(), dockerfile, tag, &[]);
    assert!(
        ran.stderr.contains("0 step(s) ran, 2 cached"),
        "{}",
        ran.both()
    );

    // -q prints only the ID, and --report still writes the file; --no-report prints none
    let quiet_report = ctx.path().join("quiet-report.json");
    let ran = build_ok(
        root.path(),
        ctx.path(),
        dockerfile,
        tag,
        &["-q", "--report", quiet_report.to_str().expect("utf-8 path")],
    );
    assert_eq!(
        ran.stdout.trim().len(),
        "sha256:".len() + 64,
        "{}",
        ran.both()
    );
    let quiet: Value =
        serde_json::from_slice(&fs::read(&quiet_report).expect("report written")).expect("json");
    assert_eq!(quiet["cache_hits"], 2);
    assert_eq!(
        quiet["findings"], report["findings"],
        "same measured findings"
    );
    let ran = build_ok(root.path(), ctx.path(), dockerfile, tag, &["--no-report"]);
    assert!(!ran.stderr.contains("build report:"), "{}", ran.both());

    // An edit-and-rebuild loop: only the last step runs. The report's scan of the layers
    // below it is made while that step runs, and continued: it must measure exactly what
    // a full analysis of the image does, here with a last layer that hides a lower file.
    let dockerfile = format!("{dockerfile}COPY obj.o /tmp/build/obj.o\n");
    for round in 0..2u32 {
        fs::write(ctx.path().join("obj.o"), noise(300_000, 7 + round)).expect("write obj.o");
        let edit_report = ctx.path().join(format!("edit-report-{round}.json"));
        build_ok(
            root.path(),
            ctx.path(),
            &dockerfile,
            tag,
            &["--report", edit_report.to_str().expect("utf-8 path")],
        );
        let report: Value =
            serde_json::from_slice(&fs::read(&edit_report).expect("report")).expect("json");
        assert_eq!(report["steps_run"], 1, "{report}");
        let analysis = analyze_json(root.path(), tag);
        let totals = &analysis["totals"];
        assert!(
            totals["reclaimable_bytes"]
                .as_u64()
                .is_some_and(|b| b >= 400_000),
            "the COPY hides the RUN's object file: {totals}"
        );
        assert_eq!(
            report["efficiency"], totals["efficiency"],
            "{report}\n{totals}"
        );
        assert_eq!(
            report["size_bytes"], totals["tar_bytes"],
            "{report}\n{totals}"
        );
        // The hidden version was written below the last layer: only a scan that kept the
        // lower layers' files sees line 4 overwrite it.
        assert!(
            report["findings"]
                .as_array()
                .expect("findings")
                .iter()
                .any(|f| f["line"] == 3
                    && f["bytes"] == 400_000
                    && f["message"]
                        .as_str()
                        .is_some_and(|m| m.contains("later step (line 4)"))),
            "line 3's object file is hidden by line 4 now: {report}"
        );
    }
}

// ------------------------------------------------------ the seed's walkthrough

fn lint_rules(ctx: &Path, dockerfile: &str) -> Vec<String> {
    let file = ctx.join("lint.Dockerfile");
    fs::write(&file, dockerfile).expect("write");
    let mut cmd = stowage(ctx);
    cmd.args(["lint", "--format", "json", "-f"])
        .arg(&file)
        .arg(ctx);
    let ran = run(cmd);
    let value: Value =
        serde_json::from_str(&ran.stdout).unwrap_or_else(|e| panic!("{e}: {}", ran.both()));
    let mut rules: Vec<String> = value["findings"]
        .as_array()
        .expect("findings")
        .iter()
        .filter_map(|f| f["rule"].as_str().map(str::to_owned))
        .collect();
    rules.sort();
    rules.dedup();
    rules
}

fn leftover_bytes(analysis: &Value, category: &str, user_layers_only: bool) -> u64 {
    analysis["leftovers"]
        .as_array()
        .expect("leftovers")
        .iter()
        .filter(|l| l["category"] == category && (!user_layers_only || l["layer"] != 0))
        .filter_map(|l| l["bytes"].as_u64())
        .sum()
}

fn diff_json(root: &Path, a: &str, b: &str) -> Value {
    let mut cmd = stowage(root);
    cmd.args(["diff", "--format", "json", a, b]);
    serde_json::from_str(&run_ok(cmd).stdout).expect("diff json")
}

#[test]
fn seed_walkthrough_lint_findings_go_and_analyze_diff_measure_each_step() {
    let root = debian_store();
    let ctx = tempfile::tempdir().expect("tempdir");
    let (index_host, files_host) = pip_trusted_hosts();
    fs::write(
        ctx.path().join("requirements.txt"),
        format!(
            "--trusted-host {index_host}\n--trusted-host {files_host}\nmysql-connector-python\n"
        ),
    )
    .expect("write");
    fs::write(
        ctx.path().join("application.py"),
        "import mysql.connector\nprint(mysql.connector.__version__)\n",
    )
    .expect("write");
    fs::write(
        ctx.path().join(".dockerignore"),
        "lint.Dockerfile\nreport-*.json\n",
    )
    .expect("write");
    let steps = seed_dockerfiles(DEBIAN);

    // lint: Step 1 has a finding for each problem the seed fixes; they go one by one
    let rules: Vec<Vec<String>> = steps
        .iter()
        .map(|(_, d)| lint_rules(ctx.path(), d))
        .collect();
    let has = |step: usize, rule: &str| rules[step].iter().any(|r| r == rule);
    for rule in [
        "STW001", "STW002", "STW003", "STW005", "STW007", "STW010", "STW011",
    ] {
        assert!(has(0, rule), "Step 1 lacks {rule}: {:?}", rules[0]);
    }
    assert!(
        !has(1, "STW001") && !has(1, "STW002"),
        "Step 2 merges the RUNs: {:?}",
        rules[1]
    );
    assert!(has(1, "STW003") && has(1, "STW007"), "{:?}", rules[1]);
    assert!(
        !has(2, "STW003") && !has(2, "STW007"),
        "Step 3 cleans apt: {:?}",
        rules[2]
    );
    assert!(has(2, "STW011") && has(2, "STW010"), "{:?}", rules[2]);
    assert!(
        !has(3, "STW011") && !has(3, "STW010"),
        "Step 4 is multi-stage: {:?}",
        rules[3]
    );
    for step in 1..4 {
        assert!(rules[step].len() < rules[step - 1].len(), "{rules:?}");
    }

    // build each step; the report names Step 1's leftovers with their cost
    let mut analyses = Vec::new();
    for (variant, dockerfile) in &steps {
        let tag = format!("localhost/advisor-seed:{variant}");
        let report = ctx.path().join(format!("report-{variant}.json"));
        let ran = build_ok(
            root.path(),
            ctx.path(),
            dockerfile,
            &tag,
            &["--report", report.to_str().expect("utf-8 path")],
        );
        if *variant == "v1" {
            assert!(
                ran.stderr.contains("[STW003] line 2 left")
                    && ran.stderr.contains("/var/lib/apt/lists"),
                "{}",
                ran.both()
            );
            let report: Value =
                serde_json::from_slice(&fs::read(&report).expect("report")).expect("json");
            let toolchain = report["findings"]
                .as_array()
                .expect("findings")
                .iter()
                .any(|f| f["line"] == 3 && f["bytes"].as_u64().is_some_and(|b| b > 10_000_000));
            assert!(toolchain, "line 3's toolchain is measured: {report}");
        }
        analyses.push(analyze_json(root.path(), &tag));
    }
    let size = |i: usize| analyses[i]["totals"]["tar_bytes"].as_u64().expect("size");
    let layers = |i: usize| analyses[i]["totals"]["layers"].as_u64().expect("layers");
    eprintln!(
        "seed walkthrough: sizes {:?}, layers {:?}",
        (0..4).map(size).collect::<Vec<_>>(),
        (0..4).map(layers).collect::<Vec<_>>()
    );

    // Step 1: apt lists in the update layer and a toolchain
    assert!(leftover_bytes(&analyses[0], "apt lists", true) > 1_000_000);
    assert!(leftover_bytes(&analyses[0], "gcc", true) > 10_000_000);
    // Step 2: one layer fewer, same leftovers
    assert_eq!(layers(1) + 1, layers(0));
    let d12 = diff_json(
        root.path(),
        "localhost/advisor-seed:v1",
        "localhost/advisor-seed:v2",
    );
    assert_eq!(d12["b"]["layers"].as_u64(), Some(layers(0) - 1));
    assert_eq!(
        d12["shared_layers"].as_array().map(Vec::len),
        Some(1),
        "only the base"
    );
    assert!(leftover_bytes(&analyses[1], "apt lists", true) > 1_000_000);
    // Step 3: no apt lists from the build, no recommends: smaller
    assert_eq!(leftover_bytes(&analyses[2], "apt lists", true), 0);
    assert!(size(2) < size(1), "{} < {}", size(2), size(1));
    let d23 = diff_json(
        root.path(),
        "localhost/advisor-seed:v2",
        "localhost/advisor-seed:v3",
    );
    assert!(
        d23["removed_bytes"]
            .as_u64()
            .is_some_and(|b| b > 10_000_000),
        "{}",
        d23["removed_bytes"]
    );
    // Step 4: the runtime stage has no compiler and is the smallest
    assert_eq!(
        analyses[3]["totals"]["toolchain_bytes"]
            .as_u64()
            .map(|b| b < 1_000_000),
        Some(true)
    );
    assert_eq!(leftover_bytes(&analyses[3], "gcc", false), 0);
    // ... and the pip cache stayed in the build stage
    assert_eq!(leftover_bytes(&analyses[3], "pip cache", false), 0);
    assert!(size(3) < size(2), "{} < {}", size(3), size(2));
    let d34 = diff_json(
        root.path(),
        "localhost/advisor-seed:v3",
        "localhost/advisor-seed:v4",
    );
    let gcc_removed = d34["removed"].as_array().expect("removed").iter().any(|c| {
        c["path"]
            .as_str()
            .is_some_and(|p| p.starts_with("/usr/lib/gcc/"))
    });
    assert!(gcc_removed, "diff v3 v4 shows the compiler gone");
}
