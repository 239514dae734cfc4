//! Compresses standard input to standard output with stowage's layer compressors
//! (the deterministic parallel gzip writer, or zstd), for benchmarks against
//! pigz and zstd on the same file. Prints the throughput on standard error.
//!
//! Run: `cargo run --release -p stowage-archive --example compress_stream --
//! [gzip|zstd|none] [LEVEL] [THREADS] < in > out`

use std::io::{self, BufWriter, Read, Write};
use std::time::Instant;

use stowage_archive::{CompressingWriter, Compression, default_compression_threads};

fn main() -> io::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let format = args.first().map_or("gzip", String::as_str);
    let level: Option<i32> = args.get(1).and_then(|l| l.parse().ok());
    let threads: usize = args
        .get(2)
        .and_then(|t| t.parse().ok())
        .unwrap_or_else(default_compression_threads);
    let compression = match format {
        "gzip" => Compression::Gzip {
            level: level.map_or(6, |l| l.clamp(1, 9) as u32),
        },
        "zstd" => Compression::Zstd {
            level: level.map_or(3, |l| l.clamp(1, 22)),
        },
        "none" => Compression::None,
        other => {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("unknown format {other:?}: gzip, zstd or none"),
            ));
        }
    };
    let started = Instant::now();
    let stdout = io::stdout();
    let out = BufWriter::with_capacity(1024 * 1024, stdout.lock());
    let mut writer = CompressingWriter::new(compression, threads, out)?;
    let mut input = io::stdin().lock();
    let mut buffer = vec![0u8; 1024 * 1024];
    let mut total: u64 = 0;
    loop {
        let read = input.read(&mut buffer)?;
        if read == 0 {
            break;
        }
        writer.write_all(&buffer[..read])?;
        total += read as u64;
    }
    writer.finish()?.flush()?;
    let seconds = started.elapsed().as_secs_f64();
    eprintln!(
        "{format} level {level:?} threads {threads}: {total} bytes in {seconds:.2} s ({:.1} MB/s)",
        total as f64 / seconds / 1e6
    );
    Ok(())
}
