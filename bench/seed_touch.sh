#!/usr/bin/env bash
# bench/seed_touch.sh -- the seed's Step 4 rebuilt after a one-file change (issue #5, item 6).
#
# The seed's Step 4 Dockerfile ($CTX/df/seed-v4.Dockerfile from `peers.sh gen`: requirements
# copied and installed before `COPY . /app`) is built once by every builder (untimed: apt-get
# and pip download packages). Then, RUNS times, application.py gets a new last line and each
# builder rebuilds; only `COPY . /app` and what follows may run. The builders' order changes
# from run to run (a balanced Latin square: each builder follows each other one equally
# often). Prints medians and stowage's speed-up. The edit is undone at the end.
#
# Usage: STOWAGE=/path/to/stowage bench/seed_touch.sh
# Knobs: RUNS=5, CTX=/tmp/bench-ctx, BUILDERS="docker-buildkit docker-classic buildah",
#        LOCK=/tmp/bench.lock, OUT=bench/results/seed-touch-<timestamp>
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
CTX=${CTX:-/tmp/bench-ctx}
RUNS=${RUNS:-5}
LOCK=${LOCK:-/tmp/bench.lock}
BUILDERS=${BUILDERS:-"docker-buildkit docker-classic buildah"}
STOWAGE=${STOWAGE:-$REPO/target/release/stowage}
DEBIAN_TAR=${DEBIAN_TAR:-/var/cache/stowage-test/debian-bookworm-minbase.tar}
BASE=localhost:5000/library/debian:bookworm
OUT=${OUT:-$REPO/bench/results/seed-touch-$(date +%Y%m%d-%H%M%S)}
DF=$CTX/df/seed-v4.Dockerfile
APP=$CTX/seed/application.py
TAG=stowage-bench/seed-touch

log() { printf '[%(%H:%M:%S)T seed-touch] %s\n' -1 "$*" >&2; }
[ -x "$STOWAGE" ] || { log "FATAL: no stowage binary at $STOWAGE"; exit 1; }
[ -f "$DF" ] && [ -f "$APP" ] || { log "FATAL: run /work/shared/bench/peers.sh gen first"; exit 1; }
mkdir -p "$OUT/logs"
ROOT=$(mktemp -d /tmp/seed-touch-root.XXXXXX)
cp -p "$APP" "$OUT/application.py.orig"
restore() { cp -p "$OUT/application.py.orig" "$APP"; rm -rf "$ROOT"; }
trap restore EXIT

build_cmd() {  # builder -> command line
  case $1 in
    stowage) echo "$STOWAGE --root $ROOT build --progress plain -f $DF -t $TAG:stowage $CTX/seed";;
    docker-buildkit) echo "env DOCKER_BUILDKIT=1 /usr/bin/docker build --progress=plain -f $DF -t $TAG:buildkit $CTX/seed";;
    docker-classic) echo "env DOCKER_BUILDKIT=0 /usr/bin/docker build --force-rm -f $DF -t $TAG:classic $CTX/seed";;
    buildah) echo "buildah bud --isolation chroot --layers --tls-verify=false -f $DF -t $TAG:buildah $CTX/seed";;
  esac
}

timed() {  # builder logfile -> seconds on stdout; fails if the build fails
  local t0 t1 rc
  exec 9>>"$LOCK"; flock 9; sync
  t0=$EPOCHREALTIME
  set +e; $(build_cmd "$1") > "$2" 2>&1; rc=$?; set -e
  t1=$EPOCHREALTIME
  sync; flock -u 9
  [ "$rc" = 0 ] || { log "FATAL: $1 failed (rc $rc), see $2"; exit 1; }
  awk -v a="$t0" -v b="$t1" 'BEGIN{printf "%.3f\n", b-a}'
}

log "priming (untimed): base image into stowage's store, then one build per builder"
"$STOWAGE" --root "$ROOT" import "$DEBIAN_TAR" "$BASE" > "$OUT/logs/import.log" 2>&1
for b in stowage $BUILDERS; do
  timed "$b" "$OUT/logs/prime.$b.log" > /dev/null
done

echo "builder,run,seconds" > "$OUT/times.csv"
ALL=(stowage $BUILDERS)
n=${#ALL[@]}
# A Williams design: run r uses row (r-1) mod n of a balanced Latin square, in which every
# builder directly follows every other one equally often. A build that follows a
# container-running builder (classic, buildah) pays for the kernel's clean-up of its
# namespaces and mounts; with a fixed order the same builder would always pay it.
first_row=(0); lo=1; hi=$((n - 1))
while [ ${#first_row[@]} -lt "$n" ]; do
  first_row+=("$lo"); lo=$((lo + 1))
  [ ${#first_row[@]} -lt "$n" ] && { first_row+=("$hi"); hi=$((hi - 1)); }
done
for r in $(seq 1 "$RUNS"); do
  { cat "$OUT/application.py.orig"; echo "# seed-touch edit $r $EPOCHREALTIME"; } > "$APP"
  order=()
  for k in "${first_row[@]}"; do order+=("${ALL[$(( (k + r - 1) % n ))]}"); done
  log "run $r order: ${order[*]}"
  for b in "${order[@]}"; do
    s=$(timed "$b" "$OUT/logs/run$r.$b.log")
    echo "$b,$r,$s" >> "$OUT/times.csv"
    log "run $r $b: $s s"
  done
  # the step that must not run: pip install (stowage says CACHED for it)
  grep -q "RUN pip install.*" "$OUT/logs/run$r.stowage.log"
  if grep -A1 "RUN pip install" "$OUT/logs/run$r.stowage.log" | grep -q "DONE"; then
    log "FATAL: stowage re-ran pip install in run $r"; exit 1
  fi
done

median() { grep "^$1," "$OUT/times.csv" | cut -d, -f3 | sort -n | awk '{a[NR]=$1} END{ if (NR%2) print a[(NR+1)/2]; else printf "%.3f\n", (a[NR/2]+a[NR/2+1])/2 }'; }
st=$(median stowage)
{
  echo "| builder | median of $RUNS (s) | stowage speed-up |"
  echo "|---|---|---|"
  echo "| stowage | $st | 1.00x |"
  for b in $BUILDERS; do
    m=$(median "$b")
    echo "| $b | $m | $(awk -v p="$m" -v s="$st" 'BEGIN{printf "%.2fx", p/s}') |"
  done
} | tee "$OUT/report.md"
