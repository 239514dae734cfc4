#!/usr/bin/env bash
# bench/compress.sh: layer compression speed on a ~1 GB tar of mixed data
# (text files and random files, like the bench contexts):
#   - stowage's deterministic parallel gzip, level 6, 2 threads, vs `pigz -p 2 -6`
#     (target: >= 80% of pigz's speed);
#   - stowage zstd level 3 vs stowage gzip level 6 (target: >= 3x faster).
# Each figure is the median wall time of RUNS runs, reading the tar from the page
# cache and writing a file in WORK. Sizes are printed too.
#
# The compressor is crates/store/archive/examples/compress_stream.rs (stdin to
# stdout), built here with `cargo build --release --example`.
#
# Environment: SIZE_MB (1024), RUNS (3), THREADS (2), WORK (a temp dir),
# CARGO_TARGET_DIR (where the example is built; default target/).
set -euo pipefail

here=$(cd "$(dirname "$0")/.." && pwd)
SIZE_MB=${SIZE_MB:-1024}
RUNS=${RUNS:-3}
THREADS=${THREADS:-2}
target=${CARGO_TARGET_DIR:-$here/target}
die() { echo "compress.sh: $*" >&2; exit 1; }
command -v pigz >/dev/null || die "pigz missing (apt install pigz)"
command -v python3 >/dev/null || die "python3 missing"

(cd "$here" && CARGO_TARGET_DIR=$target cargo build -q --release -p stowage-archive --example compress_stream)
bin=$target/release/examples/compress_stream
[ -x "$bin" ] || die "$bin was not built"

WORK=${WORK:-$(mktemp -d /tmp/stowage-compress-bench.XXXXXX)}
trap 'rm -rf "$WORK"' EXIT
tarball=$WORK/input.tar

# ~75% text files (compressible source-like lines), ~25% random files.
python3 - "$WORK/tree" "$SIZE_MB" <<'PY'
import os, random, sys
root, size_mb = sys.argv[1], int(sys.argv[2])
rng = random.Random(8)
words = ["layer", "image", "manifest", "config", "the", "of", "and", "/usr/lib/",
         "x86_64", "linux-gnu", '{"key":', '"value"},', "0123456789", "return", "fn"]
target = size_mb * 1024 * 1024
written, n = 0, 0
while written < target:
    d = os.path.join(root, f"d{n // 200:04d}")
    os.makedirs(d, exist_ok=True)
    size = rng.randint(16 * 1024, 2 * 1024 * 1024)
    path = os.path.join(d, f"f{n:06d}")
    with open(path, "wb") as f:
        if rng.random() < 0.25:
            f.write(os.urandom(size))
        else:
            lines, have = [], 0
            while have < size:
                line = " ".join(rng.choice(words) for _ in range(rng.randint(3, 14))) + "\n"
                lines.append(line)
                have += len(line)
            f.write("".join(lines).encode()[:size])
    written += size
    n += 1
PY
tar -C "$WORK/tree" --sort=name -cf "$tarball" .
rm -rf "$WORK/tree"
bytes=$(stat -c %s "$tarball")
cat "$tarball" > /dev/null

# median wall seconds of RUNS runs of: $1 (a command reading $tarball, writing $2)
median() {
  local out=$1; shift
  local times=()
  for _ in $(seq "$RUNS"); do
    local start end
    start=$(date +%s.%N)
    "$@" < "$tarball" > "$out" 2>/dev/null
    end=$(date +%s.%N)
    times+=("$(echo "$end - $start" | bc)")
  done
  printf '%s\n' "${times[@]}" | sort -n | sed -n "$(( (RUNS + 1) / 2 ))p"
}

gzip_s=$(median "$WORK/out.stowage.gz" "$bin" gzip 6 "$THREADS")
pigz_s=$(median "$WORK/out.pigz.gz" pigz -p "$THREADS" -6 -c)
zstd_s=$(median "$WORK/out.zst" "$bin" zstd 3 "$THREADS")
gzip -t "$WORK/out.stowage.gz" || die "stowage's gzip output does not verify"

mbps() { echo "scale=1; $bytes / $1 / 1000000" | bc; }
printf 'input: %s bytes (%d MB tar, mixed text + random), %s threads, median of %s\n' \
  "$bytes" "$((bytes / 1000000))" "$THREADS" "$RUNS"
printf '%-28s %8s s  %7s MB/s  %12s bytes\n' \
  "stowage gzip -6" "$gzip_s" "$(mbps "$gzip_s")" "$(stat -c %s "$WORK/out.stowage.gz")" \
  "pigz -p $THREADS -6" "$pigz_s" "$(mbps "$pigz_s")" "$(stat -c %s "$WORK/out.pigz.gz")" \
  "stowage zstd -3" "$zstd_s" "$(mbps "$zstd_s")" "$(stat -c %s "$WORK/out.zst")"
printf 'stowage gzip vs pigz: %s%% of pigz speed (target >= 80%%)\n' \
  "$(echo "scale=0; 100 * $pigz_s / $gzip_s" | bc)"
printf 'zstd -3 vs gzip -6: %sx faster (target >= 3x)\n' \
  "$(echo "scale=2; $gzip_s / $zstd_s" | bc)"
