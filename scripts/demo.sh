#!/usr/bin/env bash
# The main job: build the seed's example image with stowage on a local Debian
# base (debootstrap + stowage import, no registry needed), show it, run it.
# Usage: scripts/demo.sh            (Debian 12, as root)
set -euo pipefail
cd "$(dirname "$0")/.."

export STOWAGE_ROOT=${STOWAGE_ROOT:-/var/lib/stowage}
bash scripts/services.sh deps >/dev/null
cargo build --release -q -p stowage
stowage=${CARGO_TARGET_DIR:-target}/release/stowage

base=localhost/debian:bookworm
if ! "$stowage" inspect "$base" >/dev/null 2>&1; then
  rootfs=$(bash scripts/services.sh base-rootfs)
  "$stowage" import "$rootfs" "$base"
fi

# The example's context, with the package index hosts trusted by name: pip
# inside the build sees this machine's TLS-intercepting proxy (see
# ../shared/bench/README.md).
ctx=$(mktemp -d)
trap 'rm -rf "$ctx"' EXIT
cp examples/seed/Dockerfile examples/seed/application.py "$ctx"/
read -r index_host files_host < <(python3 -c "import urllib.parse, pip._internal.models.index as m; print(urllib.parse.urlparse(m.PyPI.url).netloc, m.PyPI.file_storage_domain)")
{ printf -- '--trusted-host %s\n--trusted-host %s\n' "$index_host" "$files_host"; cat examples/seed/requirements.txt; } > "$ctx/requirements.txt"

"$stowage" build -t seed:v1 "$ctx"
"$stowage" images
"$stowage" run --rm seed:v1
