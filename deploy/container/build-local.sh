#!/usr/bin/env bash
# Build the container image from deploy/container/Dockerfile with podman, on a machine that
# reaches Debian's package archive and crates.io but no container registry: the two base
# images the Dockerfile names are made locally and tagged with the names it pulls.
#   docker.io/library/debian:bookworm-slim     debootstrap --variant=minbase bookworm
#   docker.io/library/rust:1.95-slim-bookworm  that, plus gcc and this machine's Rust toolchain
# Then `podman build` runs the Dockerfile unchanged and the image is smoke-tested (read-only
# root filesystem, non-root user). Run from anywhere, as root:
#   bash deploy/container/build-local.sh [TAG]        (default TAG: residency-proxy:0.1.0)
# Where a registry is reachable, `docker build -f deploy/container/Dockerfile .` is all it takes.
set -euo pipefail
cd "$(dirname "$0")/../.."
tag=${1:-residency-proxy:0.1.0}
rust_version=1.95
cache=${XDG_CACHE_HOME:-$HOME/.cache}/residency-proxy-image
mkdir -p "$cache"
start=$SECONDS
step() { echo "== [$((SECONDS - start))s] $*"; }

need=()
for tool in podman runc debootstrap; do command -v "$tool" >/dev/null || need+=("$tool"); done
if ((${#need[@]})); then
  step "installing ${need[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

# runc and no default ulimits: inside a container or a sandbox crun may refuse the cgroup
# layout, and raising RLIMIT_NOFILE/NPROC may be denied. Neither changes the image.
cat > "$cache/containers.conf" <<'CONF'
[containers]
default_ulimits = []
[engine]
runtime = "runc"
CONF
export CONTAINERS_CONF=$cache/containers.conf

debian=docker.io/library/debian:bookworm-slim
if ! podman image exists "$debian"; then
  if [[ ! -x $cache/rootfs/bin/bash ]]; then
    step "debootstrap bookworm (minbase)"
    rm -rf "$cache/rootfs"
    debootstrap --variant=minbase bookworm "$cache/rootfs" http://deb.debian.org/debian >"$cache/debootstrap.log"
  fi
  # What the official slim images leave out too: downloaded packages, package lists, docs.
  rm -rf "$cache"/rootfs/var/cache/apt/archives/*.deb "$cache"/rootfs/var/lib/apt/lists/* \
    "$cache"/rootfs/usr/share/doc/* "$cache"/rootfs/usr/share/man/* "$cache"/rootfs/usr/share/locale/*
  step "importing $debian"
  tar -C "$cache/rootfs" -c . | podman import -q - "$debian" >/dev/null
fi

rust=docker.io/library/rust:${rust_version}-slim-bookworm
if ! podman image exists "$rust"; then
  sysroot=$(rustc +"$rust_version" --print sysroot 2>/dev/null || rustc --print sysroot)
  ctx=$(mktemp -d)
  trap 'rm -rf "$ctx"' EXIT
  step "making $rust from $sysroot"
  mkdir -p "$ctx/rust"
  cp -a "$sysroot/bin" "$sysroot/lib" "$ctx/rust/"
  cat > "$ctx/Containerfile" <<CF
FROM $debian
RUN apt-get update -qq && apt-get install -y -qq --no-install-recommends gcc libc6-dev ca-certificates >/dev/null && rm -rf /var/lib/apt/lists/*
COPY rust /usr/local/rust
ENV CARGO_HOME=/usr/local/cargo PATH=/usr/local/cargo/bin:/usr/local/rust/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
CF
  podman build -q --network=host -t "$rust" "$ctx" >/dev/null
fi

# The build machine's CA bundle is mounted for the build steps only (cargo fetching crates behind
# a TLS-inspecting network); it is not part of any image layer.
ca=()
[[ -f /etc/ssl/certs/ca-certificates.crt ]] && ca=(--volume /etc/ssl/certs/ca-certificates.crt:/etc/ssl/certs/ca-certificates.crt:ro)
step "podman build -f deploy/container/Dockerfile -t $tag ."
# Docker's image format: the OCI one has no HEALTHCHECK.
podman build --format docker --network=host "${ca[@]}" -f deploy/container/Dockerfile -t "$tag" . >"$cache/build.log" 2>&1 ||
  { tail -40 "$cache/build.log" >&2; exit 1; }

step "smoke test"
# podman schedules a HEALTHCHECK through systemd timers and complains where there is no systemd.
run() { podman run --rm --read-only --network=none "$tag" "$@" 2> >(grep -v 'systemd connection' >&2); }
run --version | head -1
user=$(podman image inspect "$tag" --format '{{.Config.User}}')
[[ $user == 65532:65532 ]] || { echo "image user is '$user', expected 65532:65532" >&2; exit 1; }
run lookup 81.2.69.142 | head -1
if out=$(run check /etc/residency-proxy/residency-proxy.toml 2>&1); then
  echo "the image's configuration checks"
elif [[ $out == *"unknown field \`admin\`"* ]]; then
  echo "the image's configuration has an [admin] table, which this build does not know yet"
else
  echo "$out" >&2; exit 1
fi
health=$(podman image inspect "$tag" --format '{{json .Config.Healthcheck.Test}} {{.Config.StopSignal}}')
[[ $health == *'/dev/tcp/127.0.0.1/9090'*SIGTERM ]] || { echo "image healthcheck/stop signal: $health" >&2; exit 1; }
echo "healthcheck and stop signal: $health"
step "done: $tag, $(podman image inspect "$tag" --format '{{.Size}}' | awk '{printf "%.1f MB", $1 / 1e6}')"
