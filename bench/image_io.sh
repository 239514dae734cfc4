#!/usr/bin/env bash
# image_io.sh: streaming and speed figures of stowage's image archive commands.
#   1. peak RSS (/usr/bin/time -v) and wall time of `import`, `save` and `load` of a
#      2 GiB image (a generated rootfs of random-ish files: half random bytes, half text);
#   2. `stowage import` vs `docker import` of the same 200 MB tarball, median of 3 runs.
# Usage (as root, dockerd running, see scripts/services.sh):
#   CARGO_TARGET_DIR=/work/target-images cargo build --release -p stowage
#   STOWAGE=/work/target-images/release/stowage bench/image_io.sh
# Environment: STOWAGE (binary), WORK (scratch dir, default /tmp/stowage-bench-image-io),
# BIG_MB (default 2048), SMALL_MB (default 200), RUNS (default 3), DOCKER (client),
# COMPRESSION (stowage layer compression for import/load: gzip|zstd|none, default gzip).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
STOWAGE=${STOWAGE:-$here/../target/release/stowage}
WORK=${WORK:-/tmp/stowage-bench-image-io}
BIG_MB=${BIG_MB:-2048}
SMALL_MB=${SMALL_MB:-200}
RUNS=${RUNS:-3}
DOCKER=${DOCKER:-/usr/bin/docker}
COMPRESSION=${COMPRESSION:-gzip}
log() { printf '[image_io] %s\n' "$*" >&2; }
[ -x "$STOWAGE" ] || { echo "stowage binary not found: $STOWAGE (set STOWAGE)" >&2; exit 1; }
"$DOCKER" info >/dev/null 2>&1 || { echo "dockerd is not running (scripts/services.sh dockerd)" >&2; exit 1; }
mkdir -p "$WORK"

# gen_rootfs DIR MB: files of 1-8 MiB, alternating random bytes and repetitive text, in
# nested directories; deterministic (seeded).
gen_rootfs() {
  python3 - "$1" "$2" <<'PY'
import os, random, sys
root, total = sys.argv[1], int(sys.argv[2]) * 1024 * 1024
rng = random.Random(42)
text = b"".join(b"line %d of some configuration file with words\n" % i for i in range(4096))
written, n = 0, 0
while written < total:
    size = min(rng.randint(1, 8) * 1024 * 1024, total - written)
    d = os.path.join(root, "usr", "share", "d%02d" % (n % 37))
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, "f%05d.bin" % n), "wb") as f:
        if n % 2 == 0:
            f.write(rng.randbytes(size))
        else:
            f.write((text * (size // len(text) + 1))[:size])
    written += size
    n += 1
PY
}

make_tar() { # make_tar NAME MB
  local tarball=$WORK/$1.tar
  if [ ! -f "$tarball" ]; then
    log "generating $2 MB rootfs -> $tarball"
    rm -rf "$WORK/$1-rootfs"; mkdir -p "$WORK/$1-rootfs"
    gen_rootfs "$WORK/$1-rootfs" "$2"
    tar -C "$WORK/$1-rootfs" -cf "$tarball" .
    rm -rf "$WORK/$1-rootfs"
  fi
  echo "$tarball"
}

# measure LABEL CMD...: runs under /usr/bin/time -v, prints "LABEL seconds peak_MiB".
measure() {
  local label=$1; shift
  /usr/bin/time -v "$@" >/dev/null 2>"$WORK/time.log" || { cat "$WORK/time.log" >&2; exit 1; }
  local rss wall
  rss=$(awk -F': ' '/Maximum resident set size/ {print $2}' "$WORK/time.log")
  wall=$(awk -F': ' '/Elapsed \(wall clock\)/ {print $2}' "$WORK/time.log")
  printf '| %-28s | %10s | %8.1f |\n' "$label" "$wall" "$(echo "$rss / 1024" | bc -l)"
}

big=$(make_tar big "$BIG_MB")
small=$(make_tar small "$SMALL_MB")
rm -rf "$WORK/root1" "$WORK/root2" "$WORK/saved.tar" "$WORK/saved-oci.tar"
echo "## stowage image I/O, $(date -u +%FT%TZ), $(nproc) cores"
echo
echo "Input: $(du -h "$big" | cut -f1) tarball ($BIG_MB MiB of files), layer compression $COMPRESSION"
echo
echo "| step                         | wall       | peak MiB |"
echo "|------------------------------|------------|----------|"
measure "import (2 GiB)" "$STOWAGE" --root "$WORK/root1" import --compression "$COMPRESSION" "$big" bench/big:1
measure "save --format docker" "$STOWAGE" --root "$WORK/root1" save -o "$WORK/saved.tar" bench/big:1
measure "save --format oci" "$STOWAGE" --root "$WORK/root1" save --format oci -o "$WORK/saved-oci.tar" bench/big:1
measure "load (docker-archive)" "$STOWAGE" --root "$WORK/root2" load --compression "$COMPRESSION" -i "$WORK/saved.tar"
rm -rf "$WORK/root2"
measure "load (oci-archive)" "$STOWAGE" --root "$WORK/root2" load -i "$WORK/saved-oci.tar"
rm -rf "$WORK/root1" "$WORK/root2" "$WORK/saved.tar" "$WORK/saved-oci.tar"

median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
seconds() { local s e; s=$(date +%s.%N); "$@" >/dev/null; e=$(date +%s.%N); echo "$e - $s" | bc -l; }
echo
echo "import of a $(du -h "$small" | cut -f1) tarball, median of $RUNS:"
stowage_times=() docker_times=()
for _ in $(seq 1 "$RUNS"); do
  rm -rf "$WORK/root3"
  sync
  stowage_times+=("$(seconds "$STOWAGE" --root "$WORK/root3" import --compression "$COMPRESSION" "$small" bench/small:1)")
  sync
  docker_times+=("$(seconds "$DOCKER" import "$small" stowage-bench/small:1)")
  "$DOCKER" rmi stowage-bench/small:1 >/dev/null
done
rm -rf "$WORK/root3"
s=$(printf '%s\n' "${stowage_times[@]}" | median)
d=$(printf '%s\n' "${docker_times[@]}" | median)
echo
echo "| tool            | median s | runs |"
echo "|-----------------|----------|------|"
printf '| stowage import  | %8.2f | %s |\n' "$s" "${stowage_times[*]}"
printf '| docker import   | %8.2f | %s |\n' "$d" "${docker_times[*]}"
printf '\nstowage/docker time ratio: %.2f (below 1 = stowage faster)\n' "$(echo "$s / $d" | bc -l)"
