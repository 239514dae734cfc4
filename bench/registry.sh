#!/usr/bin/env bash
# bench/registry.sh: push and pull of a ~500 MB image to and from a local
# docker-registry, stowage vs `skopeo copy` (same image, same registry setup,
# median of 3 runs each; every run starts cold on the destination side: a fresh
# store / OCI layout for pulls, a fresh empty registry for pushes).
#
# The image (LAYERS gzip layers of incompressible data, SIZE_MB in total) is
# written as an OCI layout by python3 and seeded into the registry with skopeo.
#
# Environment: STOWAGE (the binary; default: target/release/stowage, else
# target/debug/stowage), SIZE_MB (500), LAYERS (5), RUNS (3), REGISTRY
# (/usr/bin/docker-registry), SKOPEO (/usr/bin/skopeo), WORK (a temp dir).
set -euo pipefail

here=$(cd "$(dirname "$0")/.." && pwd)
STOWAGE=${STOWAGE:-}
if [ -z "$STOWAGE" ]; then
  for candidate in "$here/target/release/stowage" "$here/target/debug/stowage"; do
    [ -x "$candidate" ] && { STOWAGE=$candidate; break; }
  done
fi
SIZE_MB=${SIZE_MB:-500}
LAYERS=${LAYERS:-5}
RUNS=${RUNS:-3}
REGISTRY=${REGISTRY:-/usr/bin/docker-registry}
SKOPEO=${SKOPEO:-/usr/bin/skopeo}
die() { echo "registry.sh: $*" >&2; exit 1; }
[ -x "${STOWAGE:-}" ] || die "no stowage binary (build it or set STOWAGE)"
[ -x "$REGISTRY" ] || die "$REGISTRY missing (apt install docker-registry)"
[ -x "$SKOPEO" ] || die "$SKOPEO missing (apt install skopeo)"
command -v python3 >/dev/null || die "python3 missing"

WORK=${WORK:-$(mktemp -d /tmp/stowage-bench-registry.XXXXXX)}
mkdir -p "$WORK"
pids=()
cleanup() {
  local pid
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# start_registry NAME: starts an empty registry, sets $port and $registry_pid
start_registry() {
  local dir=$WORK/registry-$1
  port=$(free_port)
  mkdir -p "$dir"
  cat >"$dir/config.yml" <<CFG
version: 0.1
log:
  level: error
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: $dir/data
http:
  addr: 127.0.0.1:$port
CFG
  "$REGISTRY" serve "$dir/config.yml" >"$dir/log" 2>&1 &
  registry_pid=$!
  pids+=("$registry_pid")
  local i
  for ((i = 0; i < 100; i++)); do
    curl -fs "http://127.0.0.1:$port/v2/" >/dev/null 2>&1 && return 0
    sleep 0.1
  done
  die "registry did not start: $(cat "$dir/log")"
}

stop_registry() {
  kill "$1" 2>/dev/null || true
  wait "$1" 2>/dev/null || true
  rm -rf "$WORK/registry-$2"
}

now() { date +%s.%N; }
elapsed() { python3 -c "print(f'{$2 - $1:.2f}')"; }
median() { printf '%s\n' "$@" | sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }

echo "== building a ${SIZE_MB} MB image ($LAYERS gzip layers) as an OCI layout" >&2
python3 - "$WORK/layout" "$SIZE_MB" "$LAYERS" <<'PY'
import gzip, hashlib, io, json, os, sys, tarfile
out, size_mb, layers = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
blobs = os.path.join(out, "blobs", "sha256")
os.makedirs(blobs, exist_ok=True)
def put(data):
    digest = hashlib.sha256(data).hexdigest()
    with open(os.path.join(blobs, digest), "wb") as f:
        f.write(data)
    return "sha256:" + digest, len(data)
per_layer = size_mb * 1024 * 1024 // layers
descs, diff_ids = [], []
for i in range(layers):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.GNU_FORMAT) as tar:
        info = tarfile.TarInfo(f"data/layer{i}.bin")
        info.size, info.mtime = per_layer, 946684800
        tar.addfile(info, io.BytesIO(os.urandom(per_layer)))
    raw = buf.getvalue()
    diff_ids.append("sha256:" + hashlib.sha256(raw).hexdigest())
    digest, size = put(gzip.compress(raw, compresslevel=1, mtime=0))
    descs.append({"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": digest, "size": size})
config = json.dumps({"architecture": "amd64", "os": "linux", "config": {},
                     "rootfs": {"type": "layers", "diff_ids": diff_ids}}).encode()
cdigest, csize = put(config)
manifest = json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                       "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cdigest, "size": csize},
                       "layers": descs}).encode()
mdigest, msize = put(manifest)
with open(os.path.join(out, "oci-layout"), "w") as f:
    f.write('{"imageLayoutVersion":"1.0.0"}')
with open(os.path.join(out, "index.json"), "w") as f:
    json.dump({"schemaVersion": 2, "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json",
               "digest": mdigest, "size": msize, "annotations": {"org.opencontainers.image.ref.name": "bench"}}]}, f)
PY
total_bytes=$(du -sb "$WORK/layout/blobs" | cut -f1)

start_registry source
source_port=$port
source_ref=127.0.0.1:$source_port/bench/image:1
"$SKOPEO" copy -q --dest-tls-verify=false "oci:$WORK/layout:bench" "docker://$source_ref" >&2

pull_stowage=() pull_skopeo=() push_stowage=() push_skopeo=()
for ((run = 1; run <= RUNS; run++)); do
  echo "== run $run/$RUNS" >&2
  sync
  t0=$(now); "$STOWAGE" --root "$WORK/store-$run" pull -q "$source_ref" >/dev/null; t1=$(now)
  pull_stowage+=("$(elapsed "$t0" "$t1")")
  t0=$(now); "$SKOPEO" copy -q --src-tls-verify=false "docker://$source_ref" "oci:$WORK/skopeo-$run:bench" >/dev/null; t1=$(now)
  pull_skopeo+=("$(elapsed "$t0" "$t1")")

  start_registry "push-stowage-$run"
  t0=$(now); "$STOWAGE" --root "$WORK/store-$run" push -q "$source_ref" "127.0.0.1:$port/bench/pushed:1" >/dev/null; t1=$(now)
  push_stowage+=("$(elapsed "$t0" "$t1")")
  stop_registry "$registry_pid" "push-stowage-$run"

  start_registry "push-skopeo-$run"
  t0=$(now); "$SKOPEO" copy -q --dest-tls-verify=false "oci:$WORK/skopeo-$run:bench" "docker://127.0.0.1:$port/bench/pushed:1" >/dev/null; t1=$(now)
  push_skopeo+=("$(elapsed "$t0" "$t1")")
  stop_registry "$registry_pid" "push-skopeo-$run"
  rm -rf "$WORK/skopeo-$run" "$WORK/store-$run"
done

mb=$(python3 -c "print(f'{$total_bytes / 1e6:.0f}')")
printf '\nregistry transfer of a %s MB image (%s layers), median of %s runs (seconds; all runs)\n' "$mb" "$LAYERS" "$RUNS"
printf '%-6s %-10s %8s   %s\n' op tool median runs
printf '%-6s %-10s %8s   %s\n' pull stowage "$(median "${pull_stowage[@]}")" "${pull_stowage[*]}"
printf '%-6s %-10s %8s   %s\n' pull skopeo "$(median "${pull_skopeo[@]}")" "${pull_skopeo[*]}"
printf '%-6s %-10s %8s   %s\n' push stowage "$(median "${push_stowage[@]}")" "${push_stowage[*]}"
printf '%-6s %-10s %8s   %s\n' push skopeo "$(median "${push_skopeo[@]}")" "${push_skopeo[*]}"
