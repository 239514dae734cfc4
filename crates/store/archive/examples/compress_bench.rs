//! Compression throughput: gzip level 6 on 1 and 2 threads, zstd level 3, and `pigz -p 2`
//! on the same ~256 MB of mixed text and random data.
//!
//! Run: `cargo run --release -p stowage-archive --example compress_bench [size_mb]`

use std::io::Write;
use std::time::Instant;

use stowage_archive::{CompressingWriter, Compression};

fn mixed_data(len: usize) -> Vec<u8> {
    let words = [
        "layer ",
        "image ",
        "manifest ",
        "config ",
        "the ",
        "of ",
        "and ",
        "/usr/lib/",
        "x86_64 ",
        "linux-gnu ",
        "{\"key\": ",
        "\"value\"}, ",
        "0123456789 ",
        "\n",
    ];
    let mut data = Vec::with_capacity(len);
    let mut state: u64 = 0x2545_f491_4f6c_dd1d;
    let mut next = || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    while data.len() < len {
        // 25% incompressible 4 KiB blocks, 75% text.
        if next() % 4 == 0 {
            for _ in 0..512 {
                data.extend_from_slice(&next().to_le_bytes());
            }
        } else {
            for _ in 0..600 {
                let index = usize::try_from(next() % words.len() as u64).unwrap_or(0);
                data.extend_from_slice(words.get(index).unwrap_or(&"").as_bytes());
            }
        }
    }
    data.truncate(len);
    data
}

fn measure(
    label: &str,
    data: &[u8],
    compression: Compression,
    threads: usize,
) -> std::io::Result<f64> {
    let start = Instant::now();
    let mut writer =
        CompressingWriter::new(compression, threads, Vec::with_capacity(data.len() / 2))?;
    for piece in data.chunks(1 << 20) {
        writer.write_all(piece)?;
    }
    let out = writer.finish()?;
    let seconds = start.elapsed().as_secs_f64();
    let mbps = data.len() as f64 / 1e6 / seconds;
    println!(
        "{label:<24} {mbps:8.1} MB/s  ratio {:.3}  ({seconds:.2} s)",
        out.len() as f64 / data.len() as f64
    );
    Ok(mbps)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let size_mb: usize = std::env::args()
        .nth(1)
        .map(|arg| arg.parse())
        .transpose()?
        .unwrap_or(256);
    let data = mixed_data(size_mb * 1_000_000);
    println!(
        "input: {} MB of mixed text/random data",
        data.len() / 1_000_000
    );
    measure(
        "gzip -6, 1 thread",
        &data,
        Compression::Gzip { level: 6 },
        1,
    )?;
    let ours = measure(
        "gzip -6, 2 threads",
        &data,
        Compression::Gzip { level: 6 },
        2,
    )?;
    measure(
        "zstd -3 (2 workers)",
        &data,
        Compression::Zstd { level: 3 },
        2,
    )?;

    let dir = tempfile::tempdir()?;
    let input = dir.path().join("input.bin");
    std::fs::write(&input, &data)?;
    let start = Instant::now();
    let status = std::process::Command::new("pigz")
        .args(["-p", "2", "-6", "-c"])
        .arg(&input)
        .stdout(std::process::Stdio::null())
        .status();
    match status {
        Ok(status) if status.success() => {
            let seconds = start.elapsed().as_secs_f64();
            let pigz = data.len() as f64 / 1e6 / seconds;
            println!("{:<24} {pigz:8.1} MB/s  ({seconds:.2} s)", "pigz -p 2 -6");
            println!("ours / pigz: {:.0}%", ours / pigz * 100.0);
        }
        other => println!("pigz not run: {other:?}"),
    }
    Ok(())
}
