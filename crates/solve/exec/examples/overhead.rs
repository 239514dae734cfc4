//! Measures what `Sandbox::run` of `/bin/true` costs end to end on an overlay
//! with 3 lower layers (median of 50 runs, each with a fresh upper/work).
//!
//! Run as root: `cargo run --release -p stowage-exec --example overhead`.

use std::fs;
use std::os::unix::fs::symlink;
use std::time::{Duration, Instant};

use stowage_exec::{RootFs, RunSpec, Sandbox};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    const RUNS: usize = 50;
    let tmp = tempfile::tempdir()?;
    let base = tmp.path().join("base");
    fs::create_dir_all(base.join("bin"))?;
    fs::create_dir_all(base.join("etc"))?;
    fs::copy("/bin/busybox", base.join("bin/busybox"))?;
    symlink("busybox", base.join("bin/true"))?;
    fs::write(base.join("etc/passwd"), "root:x:0:0:root:/root:/bin/sh\n")?;
    let mut lowers = Vec::new();
    for name in ["l3", "l2"] {
        let dir = tmp.path().join(name);
        fs::create_dir_all(dir.join(name))?;
        lowers.push(dir);
    }
    lowers.push(base);

    let sandbox = Sandbox::new();
    let mut times: Vec<Duration> = Vec::with_capacity(RUNS);
    for run in 0..RUNS {
        let upper = tmp.path().join(format!("upper{run}"));
        let work = tmp.path().join(format!("work{run}"));
        fs::create_dir(&upper)?;
        fs::create_dir(&work)?;
        let spec = RunSpec::new(
            RootFs::Overlay {
                lowers: lowers.clone(),
                upper,
                work,
            },
            vec!["/bin/true".into()],
        );
        let started = Instant::now();
        let status = sandbox.run(&spec, &mut std::io::sink())?;
        times.push(started.elapsed());
        if !status.success() {
            return Err(format!("run {run} failed: {status:?}").into());
        }
    }
    times.sort();
    let median = times.get(RUNS / 2).copied().unwrap_or_default();
    let min = times.first().copied().unwrap_or_default();
    let max = times.last().copied().unwrap_or_default();
    println!(
        "Sandbox::run(/bin/true), 3 lowers, {RUNS} runs: median {:.2} ms (min {:.2}, max {:.2})",
        median.as_secs_f64() * 1e3,
        min.as_secs_f64() * 1e3,
        max.as_secs_f64() * 1e3
    );
    Ok(())
}
