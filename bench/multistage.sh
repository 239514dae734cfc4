#!/usr/bin/env bash
# Issue 6's benchmark: two independent stages of ~3 s each (RUN sleep) and a
# final stage copying from both. A builder that runs independent stages at
# once finishes in ~3 s, one that runs them in turn in ~6 s. Times stowage and
# BuildKit on the same Dockerfile in one run (medians of RUNS, --no-cache).
# Usage: STOWAGE=target/release/stowage RUNS=3 bench/multistage.sh
set -euo pipefail
STOWAGE=${STOWAGE:-target/release/stowage}
RUNS=${RUNS:-3}
DOCKER=/usr/bin/docker
ctx=$(mktemp -d)
root=$(mktemp -d)
trap 'rm -rf "$ctx" "$root"' EXIT
cp /bin/busybox "$ctx/busybox"
cat > "$ctx/Dockerfile" <<'DF'
FROM scratch AS base
COPY busybox /bin/busybox
RUN ["/bin/busybox", "--install", "-s", "/bin"]

FROM base AS one
RUN sleep 3 && echo one > /one

FROM base AS two
RUN sleep 3 && echo two > /two

FROM base
COPY --from=one /one /one
COPY --from=two /two /two
DF
median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
time_it() { local t0=$EPOCHREALTIME; "$@" >/dev/null 2>&1; awk -v a="$t0" -v b="$EPOCHREALTIME" 'BEGIN{printf "%.2f\n", b-a}'; }
# Prime the base stage so both builders time only the parallel part.
"$STOWAGE" --root "$root" build -q -t ms:bench "$ctx" >/dev/null
DOCKER_BUILDKIT=1 "$DOCKER" build -q -t ms:bench "$ctx" >/dev/null
s=(); b=()
for _ in $(seq "$RUNS"); do
  s+=("$(time_it "$STOWAGE" --root "$root" build -q --no-cache -t ms:bench "$ctx")")
  b+=("$(time_it env DOCKER_BUILDKIT=1 "$DOCKER" build -q --no-cache -t ms:bench "$ctx")")
done
printf '| builder | median (s) | runs |\n|---|---|---|\n'
printf '| stowage | %s | %s |\n' "$(printf '%s\n' "${s[@]}" | median)" "${s[*]}"
printf '| BuildKit | %s | %s |\n' "$(printf '%s\n' "${b[@]}" | median)" "${b[*]}"
"$DOCKER" rmi ms:bench >/dev/null 2>&1 || true
