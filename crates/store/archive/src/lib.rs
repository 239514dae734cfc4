//! Layer tarballs: a deterministic layer writer and a safe layer applier, plus image archives.
