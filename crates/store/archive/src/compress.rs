//! Deterministic layer compression and one-pass layer digests.
//!
//! **gzip** ([`ParallelGzipWriter`]): the input is cut into independent 128 KiB chunks. Each
//! chunk is raw-deflated by a fresh (reset) compressor primed with the previous chunk's last
//! 32 KiB as a preset dictionary, and ended with a sync flush (the last one with a final
//! block); the pieces concatenate into one valid deflate stream, as pigz does. Chunks are
//! compressed on worker threads and written in order, and the CRC-32 is combined per chunk.
//! The bytes depend only on the input and the level, *never on the thread count*, so one
//! thread and eight threads give the same blob digest. The 10-byte header is the one Go's
//! `compress/gzip` writes (what BuildKit and Docker emit): no name, mtime 0, XFL 2 at level 9,
//! 4 at level 1 and 0 otherwise, and OS byte 255 ("unknown").
//!
//! **zstd**: libzstd in multi-threaded mode with a fixed worker count
//! ([`ZSTD_WORKERS`], independent of the machine), no content size (streaming), no dictionary
//! id, and the XXH64 content checksum on (the zstd CLI default, lets `zstd -t` verify a blob).
//! libzstd's multi-threaded output depends on its parameters and version, not on scheduling;
//! the tests pin that two runs are byte-identical.
//!
//! [`write_layer`] chains the tar writer, a sha256 of the tar (diff_id), the compressor and a
//! sha256 of the compressed bytes (blob digest), all in one pass over the tree.
//! [`decompressing_reader`] sniffs the magic bytes of gzip, zstd, xz and bzip2 streams.

use std::collections::VecDeque;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::path::Path;
use std::sync::mpsc::{self, Receiver, SyncSender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use flate2::{Compress, FlushCompress, Status};
use stowage_digest::{Digest, HashingWriter};

use crate::writer::{LayerWriteError, LayerWriterOptions, TarStats, write_layer_tar};

/// Bytes of input per independently compressed gzip chunk.
pub const GZIP_CHUNK_SIZE: usize = 128 * 1024;
/// Size of the deflate window carried from one chunk to the next as a preset dictionary.
const DEFLATE_WINDOW: usize = 32 * 1024;
/// zstd worker count; fixed so that output does not depend on the machine.
pub const ZSTD_WORKERS: u32 = 2;

/// Layer compression.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    /// Plain tar (`application/vnd.oci.image.layer.v1.tar`).
    None,
    /// gzip, level 0..=9 (`+gzip`).
    Gzip { level: u32 },
    /// zstd, level 1..=22 (`+zstd`).
    Zstd { level: i32 },
}

impl Compression {
    /// Media-type suffix: `""`, `"+gzip"` or `"+zstd"`.
    pub fn media_type_suffix(&self) -> &'static str {
        match self {
            Compression::None => "",
            Compression::Gzip { .. } => "+gzip",
            Compression::Zstd { .. } => "+zstd",
        }
    }
}

/// Digests and sizes of a layer written by [`write_layer`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LayerDigests {
    /// sha256 of the uncompressed tar.
    pub diff_id: Digest,
    /// sha256 of the bytes written to `out` (the blob).
    pub blob_digest: Digest,
    pub uncompressed_size: u64,
    pub compressed_size: u64,
    /// Entries and file bytes in the tar.
    pub tar: TarStats,
}

/// Threads used for compression by default: the available cores, at most 4.
pub fn default_compression_threads() -> usize {
    std::thread::available_parallelism()
        .map(|cores| cores.get().min(4))
        .unwrap_or(1)
}

/// Writes `src_dir` as a compressed layer into `out`, computing the diff_id and the blob digest
/// in the same pass, with [`default_compression_threads`] threads.
pub fn write_layer<W: Write>(
    src_dir: &Path,
    opts: &LayerWriterOptions,
    compression: Compression,
    out: W,
) -> Result<LayerDigests, LayerWriteError> {
    write_layer_with_threads(
        src_dir,
        opts,
        compression,
        default_compression_threads(),
        out,
    )
}

/// [`write_layer`] with an explicit compression thread count (the output does not depend on it).
pub fn write_layer_with_threads<W: Write>(
    src_dir: &Path,
    opts: &LayerWriterOptions,
    compression: Compression,
    threads: usize,
    out: W,
) -> Result<LayerDigests, LayerWriteError> {
    let finish_error = |source| LayerWriteError::Output {
        entry: "compressed stream trailer".to_owned(),
        source,
    };
    let blob_hasher = HashingWriter::new(out);
    let compressor =
        CompressingWriter::new(compression, threads, blob_hasher).map_err(finish_error)?;
    let tar_hasher = HashingWriter::new(compressor);
    let (tar_hasher, tar_stats) = write_layer_tar(src_dir, opts, tar_hasher)?;
    let (compressor, diff_id, uncompressed_size) = tar_hasher.finish();
    let blob_hasher = compressor.finish().map_err(finish_error)?;
    let (mut out, blob_digest, compressed_size) = blob_hasher.finish();
    out.flush().map_err(finish_error)?;
    Ok(LayerDigests {
        diff_id,
        blob_digest,
        uncompressed_size,
        compressed_size,
        tar: tar_stats,
    })
}

/// A writer compressing into `W` with a [`Compression`]; call [`CompressingWriter::finish`].
pub enum CompressingWriter<W: Write> {
    Plain(W),
    Gzip(Box<ParallelGzipWriter<W>>),
    Zstd(zstd::stream::write::Encoder<'static, W>),
}

impl<W: Write> std::fmt::Debug for CompressingWriter<W> {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = match self {
            CompressingWriter::Plain(_) => "Plain",
            CompressingWriter::Gzip(_) => "Gzip",
            CompressingWriter::Zstd(_) => "Zstd",
        };
        formatter
            .debug_tuple("CompressingWriter")
            .field(&kind)
            .finish()
    }
}

impl<W: Write> CompressingWriter<W> {
    /// Starts a compressed stream. `threads` is used for gzip (zstd uses [`ZSTD_WORKERS`]).
    pub fn new(compression: Compression, threads: usize, out: W) -> io::Result<Self> {
        Ok(match compression {
            Compression::None => CompressingWriter::Plain(out),
            Compression::Gzip { level } => {
                CompressingWriter::Gzip(Box::new(ParallelGzipWriter::new(out, level, threads)?))
            }
            Compression::Zstd { level } => {
                let mut encoder = zstd::stream::write::Encoder::new(out, level)?;
                encoder.multithread(ZSTD_WORKERS)?;
                encoder.include_checksum(true)?;
                encoder.include_contentsize(false)?;
                encoder.include_dictid(false)?;
                CompressingWriter::Zstd(encoder)
            }
        })
    }

    /// Ends the stream (trailer, checksum) and returns the inner writer.
    pub fn finish(self) -> io::Result<W> {
        match self {
            CompressingWriter::Plain(out) => Ok(out),
            CompressingWriter::Gzip(gzip) => gzip.finish(),
            CompressingWriter::Zstd(encoder) => encoder.finish(),
        }
    }
}

impl<W: Write> Write for CompressingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            CompressingWriter::Plain(out) => out.write(buf),
            CompressingWriter::Gzip(gzip) => gzip.write(buf),
            CompressingWriter::Zstd(encoder) => encoder.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            // Flushing gzip mid-stream would change the bytes; the data is written on finish.
            CompressingWriter::Gzip(_) => Ok(()),
            CompressingWriter::Plain(out) => out.flush(),
            CompressingWriter::Zstd(encoder) => encoder.get_mut().flush(),
        }
    }
}

/// One chunk's compressed bytes and CRC.
struct CompressedChunk {
    deflated: Vec<u8>,
    crc: crc32fast::Hasher,
}

/// Work for a gzip worker thread.
struct ChunkJob {
    input: Arc<Vec<u8>>,
    dictionary: Option<Arc<Vec<u8>>>,
    last: bool,
    reply: SyncSender<io::Result<CompressedChunk>>,
}

/// Deterministic gzip writer compressing 128 KiB chunks on `threads` worker threads (see the
/// module docs). With one thread it compresses inline and yields the same bytes.
pub struct ParallelGzipWriter<W: Write> {
    out: Option<W>,
    level: u32,
    chunk: Vec<u8>,
    previous_chunk: Option<Arc<Vec<u8>>>,
    pending: VecDeque<Receiver<io::Result<CompressedChunk>>>,
    max_pending: usize,
    jobs: Option<SyncSender<ChunkJob>>,
    workers: Vec<JoinHandle<()>>,
    inline_compressor: Option<Compress>,
    crc: crc32fast::Hasher,
    total_in: u64,
}

impl<W: Write> std::fmt::Debug for ParallelGzipWriter<W> {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("ParallelGzipWriter")
            .field("level", &self.level)
            .field("threads", &self.workers.len())
            .field("total_in", &self.total_in)
            .finish()
    }
}

impl<W: Write> ParallelGzipWriter<W> {
    /// Writes the gzip header to `out` and starts `threads` workers (none when `threads <= 1`).
    pub fn new(mut out: W, level: u32, threads: usize) -> io::Result<Self> {
        if level > 9 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("gzip level {level} is outside 0..=9"),
            ));
        }
        let extra_flags = match level {
            9 => 2,
            1 => 4,
            _ => 0,
        };
        out.write_all(&[0x1f, 0x8b, 8, 0, 0, 0, 0, 0, extra_flags, 255])?;
        let mut writer = ParallelGzipWriter {
            out: Some(out),
            level,
            chunk: Vec::with_capacity(GZIP_CHUNK_SIZE),
            previous_chunk: None,
            pending: VecDeque::new(),
            max_pending: threads.saturating_mul(2).max(1),
            jobs: None,
            workers: Vec::new(),
            inline_compressor: None,
            crc: crc32fast::Hasher::new(),
            total_in: 0,
        };
        if threads <= 1 {
            writer.inline_compressor = Some(new_raw_deflate(level));
        } else {
            let (job_sender, job_receiver) = mpsc::sync_channel::<ChunkJob>(threads);
            let job_receiver = Arc::new(Mutex::new(job_receiver));
            for _ in 0..threads {
                let job_receiver = Arc::clone(&job_receiver);
                writer.workers.push(std::thread::spawn(move || {
                    gzip_worker(&job_receiver, level);
                }));
            }
            writer.jobs = Some(job_sender);
        }
        Ok(writer)
    }

    /// Compresses what is buffered, writes the trailer and returns the inner writer.
    pub fn finish(mut self) -> io::Result<W> {
        self.submit_chunk(true)?;
        while !self.pending.is_empty() {
            self.write_oldest()?;
        }
        self.stop_workers();
        let crc = std::mem::take(&mut self.crc).finalize();
        // ISIZE is the input length modulo 2^32 (RFC 1952).
        let input_size = (self.total_in & 0xffff_ffff) as u32;
        let mut out = self
            .out
            .take()
            .ok_or_else(|| io::Error::other("gzip stream already finished"))?;
        out.write_all(&crc.to_le_bytes())?;
        out.write_all(&input_size.to_le_bytes())?;
        Ok(out)
    }

    fn stop_workers(&mut self) {
        self.jobs = None;
        for worker in self.workers.drain(..) {
            // A worker that panicked already reported through its reply channel.
            let _ = worker.join();
        }
    }

    /// Hands the buffered chunk to a worker (or compresses it inline).
    fn submit_chunk(&mut self, last: bool) -> io::Result<()> {
        let input = Arc::new(std::mem::replace(
            &mut self.chunk,
            Vec::with_capacity(if last { 0 } else { GZIP_CHUNK_SIZE }),
        ));
        let dictionary = self.previous_chunk.replace(Arc::clone(&input));
        if let Some(compressor) = self.inline_compressor.as_mut() {
            let compressed =
                compress_chunk(compressor, self.level, &input, dictionary.as_deref(), last)?;
            return self.write_chunk(compressed);
        }
        while self.pending.len() >= self.max_pending {
            self.write_oldest()?;
        }
        let (reply, result) = mpsc::sync_channel(1);
        let jobs = self
            .jobs
            .as_ref()
            .ok_or_else(|| io::Error::other("gzip workers already stopped"))?;
        jobs.send(ChunkJob {
            input,
            dictionary,
            last,
            reply,
        })
        .map_err(|_| io::Error::other("gzip worker threads stopped unexpectedly"))?;
        self.pending.push_back(result);
        Ok(())
    }

    fn write_oldest(&mut self) -> io::Result<()> {
        let Some(result) = self.pending.pop_front() else {
            return Ok(());
        };
        let compressed = result
            .recv()
            .map_err(|_| io::Error::other("a gzip worker thread died"))??;
        self.write_chunk(compressed)
    }

    fn write_chunk(&mut self, compressed: CompressedChunk) -> io::Result<()> {
        let out = self
            .out
            .as_mut()
            .ok_or_else(|| io::Error::other("gzip stream already finished"))?;
        out.write_all(&compressed.deflated)?;
        self.crc.combine(&compressed.crc);
        Ok(())
    }
}

impl<W: Write> Drop for ParallelGzipWriter<W> {
    fn drop(&mut self) {
        self.pending.clear();
        self.stop_workers();
    }
}

impl<W: Write> Write for ParallelGzipWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let room = GZIP_CHUNK_SIZE.saturating_sub(self.chunk.len());
        let taken = room.min(buf.len());
        self.chunk
            .extend_from_slice(buf.get(..taken).unwrap_or_default());
        self.total_in = self.total_in.wrapping_add(taken as u64);
        if self.chunk.len() >= GZIP_CHUNK_SIZE {
            self.submit_chunk(false)?;
        }
        Ok(taken)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

fn new_raw_deflate(level: u32) -> Compress {
    Compress::new(flate2::Compression::new(level), false)
}

fn gzip_worker(jobs: &Mutex<Receiver<ChunkJob>>, level: u32) {
    let mut compressor = new_raw_deflate(level);
    loop {
        let job = match jobs.lock() {
            Ok(receiver) => receiver.recv(),
            Err(_) => return,
        };
        let Ok(job) = job else {
            return;
        };
        let result = compress_chunk(
            &mut compressor,
            level,
            &job.input,
            job.dictionary.as_deref(),
            job.last,
        );
        if job.reply.send(result).is_err() {
            return;
        }
    }
}

/// Raw-deflates one chunk with a fresh stream state primed with the previous chunk's window.
fn compress_chunk(
    compressor: &mut Compress,
    level: u32,
    input: &[u8],
    previous: Option<&Vec<u8>>,
    last: bool,
) -> io::Result<CompressedChunk> {
    // A fresh state, not `reset()`: a reset zlib-rs stream kept enough of its
    // previous chunk that the bytes depended on which worker got which chunk.
    *compressor = new_raw_deflate(level);
    if let Some(previous) = previous {
        let window_start = previous.len().saturating_sub(DEFLATE_WINDOW);
        let window = previous.get(window_start..).unwrap_or_default();
        if !window.is_empty() {
            compressor
                .set_dictionary(window)
                .map_err(io::Error::other)?;
        }
    }
    let flush = if last {
        FlushCompress::Finish
    } else {
        FlushCompress::Sync
    };
    let mut deflated = Vec::with_capacity(input.len() / 2 + 1024);
    let start_in = compressor.total_in();
    loop {
        let consumed = usize::try_from(compressor.total_in().saturating_sub(start_in))
            .map_err(io::Error::other)?;
        let rest = input.get(consumed..).unwrap_or_default();
        if deflated.capacity() - deflated.len() < 64 {
            deflated.reserve(64 * 1024);
        }
        let status = compressor
            .compress_vec(rest, &mut deflated, flush)
            .map_err(io::Error::other)?;
        let all_consumed = compressor.total_in().saturating_sub(start_in) == input.len() as u64;
        let output_room_left = deflated.len() < deflated.capacity();
        let done = match flush {
            FlushCompress::Finish => status == Status::StreamEnd,
            _ => all_consumed && output_room_left,
        };
        if done {
            break;
        }
        if !output_room_left {
            deflated.reserve(64 * 1024);
        }
    }
    let mut crc = crc32fast::Hasher::new();
    crc.update(input);
    Ok(CompressedChunk { deflated, crc })
}

/// Compression recognised by [`detect_compression`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DetectedCompression {
    Gzip,
    Zstd,
    Xz,
    Bzip2,
    /// No known compression magic: assumed to be a plain tar.
    None,
}

/// Recognises a compressed stream from its first bytes.
pub fn detect_compression(prefix: &[u8]) -> DetectedCompression {
    if prefix.starts_with(&[0x1f, 0x8b]) {
        DetectedCompression::Gzip
    } else if prefix.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        DetectedCompression::Zstd
    } else if prefix.starts_with(&[0xfd, b'7', b'z', b'X', b'Z', 0x00]) {
        DetectedCompression::Xz
    } else if prefix.starts_with(b"BZh") {
        DetectedCompression::Bzip2
    } else {
        DetectedCompression::None
    }
}

/// Wraps `reader` in the decompressor its magic bytes call for (gzip, including multi-member,
/// zstd, xz, bzip2), or passes it through as a plain stream.
pub fn decompressing_reader<'a, R: Read + Send + 'a>(
    reader: R,
) -> io::Result<(DetectedCompression, Box<dyn Read + Send + 'a>)> {
    const MAGIC_LEN: usize = 6;
    let mut buffered = BufReader::with_capacity(64 * 1024, reader);
    let mut prefix = Vec::with_capacity(MAGIC_LEN);
    while prefix.len() < MAGIC_LEN {
        let available = buffered.fill_buf()?;
        if available.is_empty() {
            break;
        }
        let wanted = (MAGIC_LEN - prefix.len()).min(available.len());
        prefix.extend_from_slice(available.get(..wanted).unwrap_or_default());
        buffered.consume(wanted);
    }
    let kind = detect_compression(&prefix);
    let stream = io::Cursor::new(prefix).chain(buffered);
    let reader: Box<dyn Read + Send + 'a> = match kind {
        DetectedCompression::Gzip => Box::new(flate2::read::MultiGzDecoder::new(stream)),
        DetectedCompression::Zstd => Box::new(zstd::stream::read::Decoder::new(stream)?),
        DetectedCompression::Xz => Box::new(liblzma::read::XzDecoder::new_multi_decoder(stream)),
        DetectedCompression::Bzip2 => Box::new(bzip2::read::MultiBzDecoder::new(stream)),
        DetectedCompression::None => Box::new(stream),
    };
    Ok((kind, reader))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample_data(len: usize) -> Vec<u8> {
        let mut data = Vec::with_capacity(len);
        let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
        while data.len() < len {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            if (state >> 60) < 10 {
                data.extend_from_slice(&state.to_le_bytes());
            } else {
                data.extend_from_slice(b"the quick brown fox jumps over the lazy dog\n");
            }
        }
        data.truncate(len);
        data
    }

    fn gzip_with_threads(data: &[u8], level: u32, threads: usize) -> Vec<u8> {
        let mut writer = ParallelGzipWriter::new(Vec::new(), level, threads).expect("gzip writer");
        // Odd write sizes to cross chunk boundaries in many ways.
        for piece in data.chunks(77_777) {
            writer.write_all(piece).expect("write");
        }
        writer.finish().expect("finish")
    }

    fn gunzip(data: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(data)
            .read_to_end(&mut out)
            .expect("valid gzip");
        out
    }

    #[test]
    fn gzip_round_trips_and_ignores_thread_count() {
        let data = sample_data(3 * GZIP_CHUNK_SIZE + 12345);
        let single = gzip_with_threads(&data, 6, 1);
        assert_eq!(gunzip(&single), data);
        for threads in [2, 3, 8] {
            assert_eq!(
                gzip_with_threads(&data, 6, threads),
                single,
                "threads={threads}"
            );
        }
    }

    /// Regression for chunk bytes that depended on which worker (and which reused
    /// deflate state) compressed them: the same multi-MB input, compressed 30 times
    /// with 1-4 threads, random write sizes and perturbed scheduling, gives one output.
    #[test]
    fn gzip_bytes_never_depend_on_threads_write_sizes_or_scheduling() {
        let data = sample_data(4 * 1024 * 1024 + 4321);
        let reference = gzip_with_threads(&data, 6, 1);
        assert_eq!(gunzip(&reference), data);
        let mut state: u64 = 0x2545_f491_4f6c_dd1d;
        for round in 0..30 {
            let threads = 1 + round % 4;
            let mut writer = ParallelGzipWriter::new(Vec::new(), 6, threads).expect("gzip writer");
            let mut rest = &data[..];
            while !rest.is_empty() {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                let len = usize::try_from(state % 300_000).expect("small") + 1;
                let (piece, tail) = rest.split_at(len.min(rest.len()));
                writer.write_all(piece).expect("write");
                match state % 11 {
                    0 => std::thread::sleep(std::time::Duration::from_millis(1)),
                    1 => std::thread::yield_now(),
                    _ => {}
                }
                rest = tail;
            }
            let out = writer.finish().expect("finish");
            assert!(
                out == reference,
                "round {round} with {threads} thread(s) gave different bytes"
            );
        }
    }

    #[test]
    fn gzip_header_matches_go_defaults() {
        let out = gzip_with_threads(b"hello", 6, 1);
        assert_eq!(
            out.get(..10),
            Some(&[0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 255][..])
        );
        assert_eq!(gzip_with_threads(b"", 9, 1).get(8), Some(&2));
        assert_eq!(gzip_with_threads(b"", 1, 1).get(8), Some(&4));
    }

    #[test]
    fn gzip_edge_sizes_round_trip() {
        for len in [
            0,
            1,
            GZIP_CHUNK_SIZE - 1,
            GZIP_CHUNK_SIZE,
            GZIP_CHUNK_SIZE + 1,
            2 * GZIP_CHUNK_SIZE,
        ] {
            let data = sample_data(len);
            for level in [0, 1, 9] {
                let out = gzip_with_threads(&data, level, 2);
                assert_eq!(gunzip(&out), data, "len={len} level={level}");
            }
        }
    }

    #[test]
    fn gzip_output_is_accepted_by_gnu_gzip() {
        let data = sample_data(GZIP_CHUNK_SIZE * 2 + 5);
        let compressed = gzip_with_threads(&data, 6, 2);
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("x.gz");
        std::fs::write(&path, &compressed).expect("write");
        let output = std::process::Command::new("gzip")
            .arg("-t")
            .arg(&path)
            .output()
            .expect("run gzip");
        assert!(output.status.success(), "gzip -t: {output:?}");
    }

    #[test]
    fn gzip_rejects_bad_level() {
        assert!(ParallelGzipWriter::new(Vec::new(), 10, 1).is_err());
    }

    fn zstd_compress(data: &[u8], level: i32) -> Vec<u8> {
        let mut writer =
            CompressingWriter::new(Compression::Zstd { level }, 1, Vec::new()).expect("zstd");
        writer.write_all(data).expect("write");
        writer.finish().expect("finish")
    }

    #[test]
    fn zstd_is_deterministic_and_round_trips() {
        let data = sample_data(5 * 1024 * 1024);
        let first = zstd_compress(&data, 3);
        assert_eq!(zstd_compress(&data, 3), first);
        let (kind, mut reader) = decompressing_reader(&first[..]).expect("reader");
        assert_eq!(kind, DetectedCompression::Zstd);
        let mut out = Vec::new();
        reader.read_to_end(&mut out).expect("decompress");
        assert_eq!(out, data);
    }

    #[test]
    fn sniffs_every_format() {
        let data = sample_data(100_000);
        let gzip = gzip_with_threads(&data, 6, 1);
        let zstd = zstd_compress(&data, 3);
        let mut xz = liblzma::write::XzEncoder::new(Vec::new(), 6);
        xz.write_all(&data).expect("xz");
        let xz = xz.finish().expect("xz");
        let mut bz = bzip2::write::BzEncoder::new(Vec::new(), bzip2::Compression::new(6));
        bz.write_all(&data).expect("bz");
        let bz = bz.finish().expect("bz");
        let cases = [
            (gzip, DetectedCompression::Gzip),
            (zstd, DetectedCompression::Zstd),
            (xz, DetectedCompression::Xz),
            (bz, DetectedCompression::Bzip2),
            (data.clone(), DetectedCompression::None),
        ];
        for (bytes, expected) in cases {
            let (kind, mut reader) = decompressing_reader(&bytes[..]).expect("reader");
            assert_eq!(kind, expected);
            let mut out = Vec::new();
            reader.read_to_end(&mut out).expect("decompress");
            assert_eq!(out, data, "{expected:?}");
        }
        for tiny in [&b""[..], &b"ab"[..]] {
            let (kind, mut reader) = decompressing_reader(tiny).expect("reader");
            assert_eq!(kind, DetectedCompression::None);
            let mut out = Vec::new();
            reader.read_to_end(&mut out).expect("read");
            assert_eq!(out, tiny);
        }
    }
}
