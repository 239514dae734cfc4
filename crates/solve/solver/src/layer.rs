//! Writing a layer into the store in one pass: tar bytes are hashed for the
//! diff_id, compressed, and streamed into a blob writer that hashes them for the
//! blob digest and commits atomically. gzip layers take their unchanged chunks
//! from earlier blobs (the store's deflate chunk index) and record their own
//! chunks for the next build: a one-file change to a big COPY recompresses a
//! few hundred KiB, not the whole layer, and the bytes are identical either way.

use std::io::{self, Write};
use std::sync::Arc;
use std::sync::mpsc::{self, SyncSender};
use std::thread::JoinHandle;

use stowage_archive::{
    CompressingWriter, Compression, DeflateChunkKey, DeflateMemo, default_compression_threads,
};
use stowage_digest::HashingWriter;
use stowage_image::{LayerInfo, media_types};
use stowage_store::{BlobWriter, DeflateChunkIndex, DeflateChunkRecord, Store};

use crate::error::StepError;

/// The OCI media type of a layer blob compressed with `compression`.
pub fn layer_media_type(compression: Compression) -> &'static str {
    match compression {
        Compression::None => media_types::OCI_LAYER_TAR,
        Compression::Gzip { .. } => media_types::OCI_LAYER_GZIP,
        Compression::Zstd { .. } => media_types::OCI_LAYER_ZSTD,
    }
}

/// The OCI equivalent of a layer media type (Docker's gzip and tar types map
/// to OCI's; the blob bytes are the same).
pub fn oci_layer_media_type(media_type: &str) -> String {
    match media_type {
        media_types::DOCKER_LAYER_GZIP => media_types::OCI_LAYER_GZIP.to_owned(),
        media_types::DOCKER_LAYER_TAR => media_types::OCI_LAYER_TAR.to_owned(),
        other => other.to_owned(),
    }
}

/// The store's chunk index as the gzip writer's memo.
struct StoreChunkMemo(DeflateChunkIndex);

impl DeflateMemo for StoreChunkMemo {
    fn find(&self, key: &DeflateChunkKey) -> Option<Vec<u8>> {
        self.0.find(key)
    }
}

/// Bytes handed to a [`ThreadPipe`]'s thread this many at a time.
const PIPE_BUFFER: usize = 1024 * 1024;

/// Bytes written here reach a consumer on its own thread, in [`PIPE_BUFFER`] pieces
/// through a bounded channel (so memory stays bounded), and its result comes back at
/// [`ThreadPipe::finish`]. The layer sink uses two: the blob writer (its sha256 and the
/// copy into the page cache run beside compression) and the advisor's entry reader.
struct ThreadPipe<T> {
    buffer: Vec<u8>,
    sender: Option<SyncSender<Vec<u8>>>,
    thread: Option<JoinHandle<io::Result<T>>>,
}

impl<T: Send + 'static> ThreadPipe<T> {
    fn spawn(
        consume: impl FnOnce(mpsc::Receiver<Vec<u8>>) -> io::Result<T> + Send + 'static,
    ) -> Self {
        let (sender, receiver) = mpsc::sync_channel::<Vec<u8>>(4);
        Self {
            buffer: Vec::with_capacity(PIPE_BUFFER),
            sender: Some(sender),
            thread: Some(std::thread::spawn(move || consume(receiver))),
        }
    }

    /// Hands over what is buffered; false once the consumer has stopped reading.
    fn send_buffer(&mut self) -> bool {
        if self.buffer.is_empty() {
            return true;
        }
        let full = std::mem::replace(&mut self.buffer, Vec::with_capacity(PIPE_BUFFER));
        self.sender.as_ref().is_some_and(|s| s.send(full).is_ok())
    }

    /// Buffers `bytes`; false once the consumer has stopped reading.
    fn push(&mut self, bytes: &[u8]) -> bool {
        self.buffer.extend_from_slice(bytes);
        self.buffer.len() < PIPE_BUFFER || self.send_buffer()
    }

    /// Hands over the rest, ends the stream and returns the consumer's result.
    fn finish(mut self) -> io::Result<T> {
        self.send_buffer();
        self.join()
    }

    fn join(&mut self) -> io::Result<T> {
        self.sender = None;
        let thread = self
            .thread
            .take()
            .ok_or_else(|| io::Error::other("the pipe's thread already finished"))?;
        thread
            .join()
            .map_err(|_| io::Error::other("the pipe's thread panicked"))?
    }
}

impl<T> Drop for ThreadPipe<T> {
    fn drop(&mut self) {
        self.sender = None;
        if let Some(thread) = self.thread.take() {
            // An abandoned layer: whatever the consumer holds is dropped with it.
            let _ = thread.join();
        }
    }
}

/// A blob written on its own thread.
struct BackgroundBlobWriter(ThreadPipe<BlobWriter>);

impl BackgroundBlobWriter {
    fn new(mut blob: BlobWriter) -> Self {
        Self(ThreadPipe::spawn(move |pieces| {
            for piece in pieces {
                blob.write_all(&piece)?;
            }
            Ok(blob)
        }))
    }

    fn finish(self) -> io::Result<BlobWriter> {
        self.0.finish()
    }
}

impl Write for BackgroundBlobWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.0.push(buf) {
            return Ok(buf.len());
        }
        // The writer stopped: its result says why.
        Err(self
            .0
            .join()
            .err()
            .unwrap_or_else(|| io::Error::other("the blob writer thread stopped")))
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Reads the layer's tar bytes as they are written, on its own thread, into the entry list
/// the advisor's build report needs, so the report never reads the new layer back.
struct EntriesTap {
    pipe: ThreadPipe<stowage_advisor::LayerEntries>,
    /// False once the reader gave up (a tar it could not parse): no entries this time.
    open: bool,
}

/// The pieces of a [`ThreadPipe`] as one stream.
struct ChannelReader {
    receiver: mpsc::Receiver<Vec<u8>>,
    current: Vec<u8>,
    position: usize,
}

impl io::Read for ChannelReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.position >= self.current.len() {
            match self.receiver.recv() {
                Ok(next) => {
                    self.current = next;
                    self.position = 0;
                }
                Err(_) => return Ok(0),
            }
        }
        let available = self.current.get(self.position..).unwrap_or_default();
        let count = available.len().min(buf.len());
        buf[..count].copy_from_slice(&available[..count]);
        self.position += count;
        Ok(count)
    }
}

impl EntriesTap {
    fn new() -> Self {
        Self {
            pipe: ThreadPipe::spawn(|receiver| {
                stowage_advisor::read_layer_entries(ChannelReader {
                    receiver,
                    current: Vec::new(),
                    position: 0,
                })
            }),
            open: true,
        }
    }

    fn write(&mut self, bytes: &[u8]) {
        self.open = self.open && self.pipe.push(bytes);
    }

    /// The entries, if the tap read the whole layer.
    fn finish(self) -> Option<stowage_advisor::LayerEntries> {
        self.pipe.finish().ok()
    }
}

/// A `Write` that turns uncompressed tar bytes into a stored layer blob.
pub struct LayerSink<'s> {
    store: &'s Store,
    compression: Compression,
    inner: HashingWriter<CompressingWriter<BackgroundBlobWriter>>,
    tap: EntriesTap,
}

impl<'s> LayerSink<'s> {
    /// A sink writing a new blob into `store`.
    pub fn new(store: &'s Store, compression: Compression) -> Result<Self, StepError> {
        let blob = store.blob_writer(None, None)?;
        let memo: Option<Arc<dyn DeflateMemo>> = match compression {
            Compression::Gzip { .. } => {
                Some(Arc::new(StoreChunkMemo(store.deflate_chunk_index()?)))
            }
            Compression::None | Compression::Zstd { .. } => None,
        };
        let compressor = CompressingWriter::with_memo(
            compression,
            default_compression_threads(),
            BackgroundBlobWriter::new(blob),
            memo,
        )
        .map_err(StepError::io("starting compression for", store.tmp_dir()))?;
        Ok(Self {
            store,
            compression,
            inner: HashingWriter::new(compressor),
            tap: EntriesTap::new(),
        })
    }

    /// Finishes compression, commits the blob, records its gzip chunks for later builds and
    /// describes the layer.
    pub fn finish(self) -> Result<LayerInfo, StepError> {
        let (compressor, diff_id, uncompressed) = self.inner.finish();
        let finish_error = |source| StepError::Io {
            action: "finishing the compressed layer in",
            path: std::path::PathBuf::from("the store"),
            source,
        };
        let (blob, chunks, _stats) = compressor.finish_with_chunks().map_err(finish_error)?;
        let info = blob.finish().map_err(finish_error)?.commit()?;
        let records: Vec<DeflateChunkRecord> = chunks
            .iter()
            .map(|chunk| DeflateChunkRecord {
                key: chunk.key,
                offset: chunk.offset,
                length: chunk.length,
                checksum: chunk.check,
            })
            .collect();
        self.store.record_deflate_chunks(&info.digest, &records)?;
        if let Some(entries) = self.tap.finish() {
            stowage_advisor::remember_layer_entries(self.store, &diff_id, &entries);
        }
        Ok(LayerInfo {
            diff_id,
            blob_digest: info.digest,
            media_type: layer_media_type(self.compression).to_owned(),
            compressed_size: info.size,
            uncompressed_size: Some(uncompressed),
        })
    }
}

impl Write for LayerSink<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let written = self.inner.write(buf)?;
        self.tap.write(buf.get(..written).unwrap_or_default());
        Ok(written)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}
