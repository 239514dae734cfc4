//! Unit tests over synthetic layer tars built in memory.

use crate::analysis::{LayerSource, analyze_scan};
use crate::ci::{CiRules, evaluate};
use crate::diff::{Side, diff_images};
use crate::report::{StepInfo, build_report};
use crate::scan::{HiddenBy, ImageScan, Scanner};

enum Item<'a> {
    File(&'a str, &'a [u8], u32, u64),
    Dir(&'a str),
    HardLink(&'a str, &'a str),
    Whiteout(&'a str),
}

fn layer(items: &[Item<'_>]) -> Vec<u8> {
    let mut builder = tar::Builder::new(Vec::new());
    for item in items {
        let mut header = tar::Header::new_gnu();
        match item {
            Item::File(path, content, mode, uid) => {
                header.set_entry_type(tar::EntryType::Regular);
                header.set_size(content.len() as u64);
                header.set_mode(*mode);
                header.set_uid(*uid);
                header.set_cksum();
                builder
                    .append_data(&mut header, path, *content)
                    .expect("append file");
            }
            Item::Dir(path) => {
                header.set_entry_type(tar::EntryType::Directory);
                header.set_size(0);
                header.set_mode(0o755);
                header.set_cksum();
                builder
                    .append_data(&mut header, path, &[][..])
                    .expect("append dir");
            }
            Item::HardLink(path, target) => {
                header.set_entry_type(tar::EntryType::Link);
                header.set_size(0);
                header.set_mode(0o644);
                builder
                    .append_link(&mut header, path, target)
                    .expect("append link");
            }
            Item::Whiteout(path) => {
                header.set_entry_type(tar::EntryType::Regular);
                header.set_size(0);
                header.set_mode(0o644);
                header.set_cksum();
                builder
                    .append_data(&mut header, path, &[][..])
                    .expect("append whiteout");
            }
        }
    }
    builder.into_inner().expect("finish tar")
}

fn scan(layers: &[Vec<u8>]) -> ImageScan {
    let mut scanner = Scanner::new();
    for bytes in layers {
        scanner.add_layer(bytes.as_slice()).expect("scan layer");
    }
    scanner.finish()
}

fn sources(count: usize) -> Vec<LayerSource> {
    (0..count)
        .map(|i| LayerSource {
            digest: format!("sha256:{i:064}"),
            diff_id: format!("sha256:{:064}", i + 100),
            compressed_bytes: 10,
            created_by: format!("RUN step {i}"),
        })
        .collect()
}

const BIG: &[u8] = &[7u8; 1000];
const OTHER: &[u8] = &[9u8; 300];

#[test]
fn an_overwritten_file_counts_only_the_hidden_version() {
    let image = scan(&[
        layer(&[Item::Dir("app/"), Item::File("app/data", BIG, 0o644, 0)]),
        layer(&[Item::File("app/data", OTHER, 0o644, 0)]),
    ]);
    let analysis = analyze_scan("t", "id", &sources(2), &image, 20);
    assert_eq!(analysis.totals.reclaimable_bytes, 1000);
    assert_eq!(
        analysis.totals.dive_wasted_bytes, 1300,
        "dive also counts the survivor"
    );
    assert_eq!(analysis.layers[0].files_added, 1);
    assert_eq!(analysis.layers[1].files_changed, 1);
    assert_eq!(analysis.layers[0].reclaimable_bytes, 1000);
    assert_eq!(analysis.layers[1].hid_bytes, 1000);
    assert_eq!(analysis.totals.final_bytes, 300);
    let expected = 1.0 - 1000.0 / 1300.0;
    assert!((analysis.totals.efficiency - expected).abs() < 1e-9);
    assert_eq!(analysis.reclaimable[0].path, "/app/data");
    assert!(analysis.reclaimable[0].survives);
    assert!(analysis.layers[0].tar_bytes >= 1000 + 3 * 512);
    assert_eq!(analysis.layers[0].content_bytes, 1000);
}

#[test]
fn a_whiteout_deletes_the_file_and_counts_its_bytes() {
    let image = scan(&[
        layer(&[
            Item::File("big.tar", BIG, 0o644, 0),
            Item::File("keep", OTHER, 0o644, 0),
        ]),
        layer(&[Item::Whiteout(".wh.big.tar")]),
    ]);
    assert_eq!(image.hidden.len(), 1);
    assert_eq!(image.hidden[0].how, HiddenBy::Deleted);
    let analysis = analyze_scan("t", "id", &sources(2), &image, 20);
    assert_eq!(analysis.layers[1].files_removed, 1);
    assert_eq!(analysis.totals.reclaimable_bytes, 1000);
    assert_eq!(analysis.totals.final_files, 1);
    assert!(!analysis.reclaimable[0].survives);
    assert_eq!(analysis.totals.user_reclaimable_bytes, 1000);
}

#[test]
fn a_whiteout_of_a_directory_removes_its_subtree() {
    let image = scan(&[
        layer(&[
            Item::Dir("src/"),
            Item::File("src/a", BIG, 0o644, 0),
            Item::File("src/b/c", OTHER, 0o644, 0),
        ]),
        layer(&[Item::Whiteout(".wh.src")]),
    ]);
    assert_eq!(image.layers[1].files_removed, 2);
    assert!(image.files.is_empty());
    assert_eq!(image.hidden.iter().map(|h| h.size).sum::<u64>(), 1300);
}

#[test]
fn an_opaque_directory_hides_only_lower_layers() {
    let image = scan(&[
        layer(&[Item::Dir("etc/"), Item::File("etc/old", BIG, 0o644, 0)]),
        layer(&[
            Item::Dir("etc/"),
            Item::Whiteout("etc/.wh..wh..opq"),
            Item::File("etc/new", OTHER, 0o644, 0),
        ]),
    ]);
    assert!(image.files.contains_key("etc/new"));
    assert!(!image.files.contains_key("etc/old"));
    assert_eq!(image.layers[1].files_removed, 1);
    assert_eq!(image.layers[1].files_added, 1);
    assert_eq!(image.hidden.len(), 1);
    assert_eq!(image.hidden[0].path, "etc/old");
}

#[test]
fn a_chmod_only_rewrite_is_recognised() {
    let image = scan(&[
        layer(&[
            Item::File("usr/bin/tool", BIG, 0o644, 0),
            Item::File("x", OTHER, 0o644, 0),
        ]),
        layer(&[
            Item::File("usr/bin/tool", BIG, 0o755, 1000),
            Item::File("x", BIG, 0o644, 0),
        ]),
    ]);
    assert_eq!(
        image.rewrites.len(),
        1,
        "x changed content: not a metadata rewrite"
    );
    let rewrite = &image.rewrites[0];
    assert_eq!(rewrite.path, "usr/bin/tool");
    assert_eq!(rewrite.size, 1000);
    assert_eq!(rewrite.changed, vec!["mode 644->755", "uid 0->1000"]);
    let analysis = analyze_scan("t", "id", &sources(2), &image, 20);
    assert_eq!(analysis.totals.metadata_rewrite_bytes, 1000);
    assert_eq!(analysis.totals.reclaimable_bytes, 1300);
}

#[test]
fn hard_links_add_no_bytes_and_keep_the_content_hash() {
    let image = scan(&[layer(&[
        Item::File("bin/a", BIG, 0o755, 0),
        Item::HardLink("bin/b", "bin/a"),
    ])]);
    assert_eq!(image.layers[0].content_bytes, 1000);
    assert_eq!(image.layers[0].files_added, 2);
    let a = &image.files["bin/a"];
    let b = &image.files["bin/b"];
    assert_eq!(b.size, 0);
    assert_eq!(a.sha256, b.sha256);
    assert_eq!(b.link_target.as_deref(), Some("bin/a"));
}

#[test]
fn caches_and_toolchains_in_the_final_fs_are_attributed_to_their_layer() {
    let image = scan(&[
        layer(&[Item::File("bin/sh", OTHER, 0o755, 0)]),
        layer(&[
            Item::File("var/lib/apt/lists/deb_InRelease", BIG, 0o644, 0),
            Item::File("var/lib/apt/lists/lock", &[][..], 0o640, 0),
            Item::File("usr/lib/gcc/x86_64-linux-gnu/12/cc1", OTHER, 0o755, 0),
            Item::File("root/.cache/pip/http/x", OTHER, 0o644, 0),
        ]),
        layer(&[Item::Whiteout("root/.cache/pip/http/.wh.x")]),
    ]);
    let analysis = analyze_scan("t", "id", &sources(3), &image, 20);
    assert_eq!(
        analysis.totals.cache_bytes, 1000,
        "the deleted pip file no longer counts"
    );
    assert_eq!(analysis.totals.toolchain_bytes, 300);
    assert_eq!(analysis.layers[1].cache_bytes, 1000);
    let apt = &analysis.leftovers[0];
    assert_eq!(
        (
            apt.category.as_str(),
            apt.location.as_str(),
            apt.layer,
            apt.files
        ),
        ("apt lists", "/var/lib/apt/lists", 1, 1)
    );
    assert_eq!(
        analysis.top_files[0].path,
        "/var/lib/apt/lists/deb_InRelease"
    );

    let steps = vec![
        StepInfo {
            stage: "0".into(),
            line: 1,
            instruction: "FROM base".into(),
            outcome: "source".into(),
            seconds: 0.0,
            layer_digest: None,
        },
        StepInfo {
            stage: "0".into(),
            line: 2,
            instruction: "RUN apt-get update && apt-get install gcc".into(),
            outcome: "built".into(),
            seconds: 3.5,
            layer_digest: Some(sources(3)[1].digest.clone()),
        },
    ];
    let report = build_report(&analysis, &steps, None, 4.0, 5);
    assert_eq!(report.findings[0].line, 2);
    assert_eq!(report.findings[0].bytes, 1000);
    assert!(
        report.findings[0].message.contains("/var/lib/apt/lists"),
        "{:?}",
        report.findings
    );
    assert!(report.findings.iter().any(|f| f.message.contains("gcc")));
    assert_eq!(report.steps_run, 1);
}

#[test]
fn ci_rules_fail_on_waste_and_pass_a_clean_image() {
    let wasteful = scan(&[
        layer(&[Item::File("a", OTHER, 0o644, 0)]),
        layer(&[Item::File("b", BIG, 0o644, 0)]),
        layer(&[Item::Whiteout(".wh.b")]),
    ]);
    let analysis = analyze_scan("t", "id", &sources(3), &wasteful, 20);
    let results = evaluate(&analysis, &CiRules::default());
    assert!(results.iter().all(|r| !r.passed), "{results:?}");
    let clean = scan(&[layer(&[Item::File("a", OTHER, 0o644, 0)])]);
    let analysis = analyze_scan("t", "id", &sources(1), &clean, 20);
    let rules = CiRules {
        highest_wasted_bytes: Some(0),
        ..CiRules::default()
    };
    let results = evaluate(&analysis, &rules);
    assert_eq!(results.len(), 3);
    assert!(results.iter().all(|r| r.passed), "{results:?}");
}

#[test]
fn diff_lists_added_removed_changed_and_shared_layers() {
    let base = layer(&[
        Item::File("bin/sh", OTHER, 0o755, 0),
        Item::File("etc/conf", OTHER, 0o644, 0),
    ]);
    let a = scan(&[base.clone(), layer(&[Item::File("app/old", BIG, 0o644, 0)])]);
    let b = scan(&[
        base,
        layer(&[
            Item::File("app/new", OTHER, 0o644, 0),
            Item::File("etc/conf", OTHER, 0o600, 0),
        ]),
    ]);
    let sources_a = sources(2);
    let mut sources_b = sources(2);
    sources_b[1].diff_id = "sha256:other".into();
    let diff = diff_images(
        &Side {
            image: "a",
            id: "ia",
            sources: &sources_a,
            scan: &a,
        },
        &Side {
            image: "b",
            id: "ib",
            sources: &sources_b,
            scan: &b,
        },
    );
    assert_eq!(
        diff.added
            .iter()
            .map(|c| c.path.as_str())
            .collect::<Vec<_>>(),
        vec!["/app/new"]
    );
    assert_eq!(
        diff.removed
            .iter()
            .map(|c| c.path.as_str())
            .collect::<Vec<_>>(),
        vec!["/app/old"]
    );
    assert_eq!(diff.changed.len(), 1);
    assert_eq!(diff.changed[0].what, vec!["mode"]);
    assert_eq!(diff.removed_bytes, 1000);
    assert_eq!(diff.shared_layers.len(), 1);
    assert_eq!(diff.shared_layers[0].index_b, 0);
    let text = crate::diff::render_diff_text(&diff, 5);
    assert!(text.contains("shared layers: 1"), "{text}");
}

#[test]
fn json_and_html_render_every_layer() {
    let image = scan(&[
        layer(&[Item::File("a", OTHER, 0o644, 0)]),
        layer(&[Item::File("a", BIG, 0o644, 0)]),
    ]);
    let analysis = analyze_scan("t<x>", "id", &sources(2), &image, 20);
    let json: serde_json::Value =
        serde_json::from_str(&crate::render::render_json(&analysis)).expect("valid json");
    assert_eq!(json["totals"]["reclaimable_bytes"], 300);
    assert_eq!(json["layers"].as_array().map(Vec::len), Some(2));
    let html = crate::html::render_html(&analysis);
    assert_eq!(html.matches("class=\"layer-bar kept\"").count(), 2);
    assert!(html.contains("t&lt;x&gt;"));
    assert!(
        !html.contains("http://") || html.matches("http://").count() == 1,
        "only the SVG namespace"
    );
    let text = crate::render::render_text(&analysis);
    assert!(text.contains("Reclaimable"), "{text}");
}

#[test]
fn a_truncated_layer_is_an_error() {
    let bytes = layer(&[Item::File("a", BIG, 0o644, 0)]);
    let mut scanner = Scanner::new();
    assert!(scanner.add_layer(&bytes[..700]).is_err());
}

/// Stores each (uncompressed) layer tar and commits an image over them under `tag`.
fn store_image(
    store: &stowage_store::Store,
    layers: &[&Vec<u8>],
    tag: &str,
) -> stowage_store::ImageDetails {
    use stowage_digest::Digest;
    use stowage_image::{ImageConfig, LayerInfo, Platform, Reference, media_types};
    let infos: Vec<LayerInfo> = layers
        .iter()
        .map(|bytes| {
            let blob = store
                .put_blob_bytes(bytes, Some(Digest::of(bytes)))
                .expect("store layer");
            LayerInfo {
                diff_id: blob.digest,
                blob_digest: blob.digest,
                media_type: media_types::OCI_LAYER_TAR.to_owned(),
                compressed_size: blob.size,
                uncompressed_size: Some(blob.size),
            }
        })
        .collect();
    let mut config = ImageConfig::scratch(&Platform::native());
    config.rootfs.diff_ids = infos.iter().map(|layer| layer.diff_id).collect();
    store
        .commit_config(
            &config,
            infos,
            vec![Reference::parse(tag).expect("tag")],
            stowage_store::ManifestFormat::Oci,
        )
        .expect("commit image");
    store.image(tag).expect("image")
}

fn analysis_of(
    store: &stowage_store::Store,
    details: &stowage_store::ImageDetails,
    lower: Option<crate::LowerLayersScan>,
) -> crate::Analysis {
    let (sources, scan) =
        crate::scan_details_from(store, details, "image", crate::BlobCheck::Trust, lower)
            .expect("scan");
    analyze_scan("image", "id", &sources, &scan, 10)
}

#[test]
fn a_scan_of_the_lower_layers_ahead_gives_the_full_scan_and_only_where_it_fits() {
    use std::sync::atomic::AtomicBool;
    let dir = tempfile::tempdir().expect("tempdir");
    let store = stowage_store::Store::open(dir.path()).expect("store");
    let base = layer(&[
        Item::Dir("etc"),
        Item::File("etc/conf", BIG, 0o644, 0),
        Item::File("etc/old", OTHER, 0o644, 0),
        Item::File("var/cache/apt/pkg.deb", BIG, 0o644, 0),
    ]);
    let middle = layer(&[
        Item::File("etc/conf", OTHER, 0o644, 0),
        Item::File("app/lib.py", BIG, 0o644, 0),
    ]);
    let top = layer(&[Item::File("app/main.py", b"print(1)", 0o644, 0)]);
    // The edit: a new top layer that also deletes and rewrites lower files.
    let edited_top = layer(&[
        Item::File("app/main.py", b"print(2)", 0o755, 0),
        Item::Whiteout("etc/.wh.old"),
        Item::File("app/lib.py", BIG, 0o600, 1000),
    ]);
    let before = store_image(&store, &[&base, &middle, &top], "app:1");
    let after = store_image(&store, &[&base, &middle, &edited_top], "app:2");
    let stop = AtomicBool::new(false);

    let lower = crate::LowerLayersScan::scan(&store, &before, 2, &stop).expect("lower scan");
    assert_eq!(lower.layers(), 2);
    let full = analysis_of(&store, &after, None);
    assert_eq!(analysis_of(&store, &after, Some(lower)), full);
    assert!(full.totals.reclaimable_bytes > 0, "{:?}", full.totals);
    // The lower scan really stands in for those layers: one claiming them but holding
    // nothing changes the result.
    let hollow = || crate::LowerLayersScan {
        diff_ids: after.layers[..2].iter().map(|l| l.diff_id).collect(),
        scanner: Scanner::new(),
    };
    assert_ne!(analysis_of(&store, &after, Some(hollow())), full);

    // Lower layers that are not the image's own (other order) are dropped, not merged.
    let reordered = store_image(&store, &[&middle, &base, &edited_top], "app:3");
    assert_eq!(
        analysis_of(&store, &reordered, Some(hollow())),
        analysis_of(&store, &reordered, None)
    );
    // Nor do more lower layers than the image has.
    let short = store_image(&store, &[&base], "app:4");
    assert_eq!(
        analysis_of(&store, &short, Some(hollow())),
        analysis_of(&store, &short, None)
    );

    // A stopped scan gives up before its next layer.
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    assert!(crate::LowerLayersScan::scan(&store, &before, 2, &stop).is_none());
}
