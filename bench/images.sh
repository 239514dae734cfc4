#!/usr/bin/env bash
# `stowage images` on a store holding 1,000 images (issue 3's target: under
# 100 ms). Fills a fresh store with 1,000 one-layer images (`stowage import` of
# 1,000 distinct tiny rootfs tarballs), then times `stowage images` with
# hyperfine.  Usage: STOWAGE=target/release/stowage bench/images.sh
set -euo pipefail
STOWAGE=${STOWAGE:-target/release/stowage}
N=${N:-1000}
root=$(mktemp -d)
work=$(mktemp -d)
trap 'rm -rf "$root" "$work"' EXIT
mkdir -p "$work/rootfs"
for i in $(seq 1 "$N"); do
  echo "$i" > "$work/rootfs/id"
  tar -C "$work/rootfs" -cf "$work/r.tar" .
  "$STOWAGE" --root "$root" import "$work/r.tar" "bench/img$i:latest" >/dev/null
done
"$STOWAGE" --root "$root" images | wc -l
hyperfine --warmup 3 --runs 20 "$STOWAGE --root $root images" "$STOWAGE --root $root images --format json"
