#!/usr/bin/env bash
# Make the release archive the Gateway VPC's launch template installs: the release binary and
# the systemd unit, sysusers and logrotate files of deploy/systemd, flat.
#   bash deploy/aws/make-release.sh [OUT.tar.gz]
#   aws s3 cp residency-proxy-0.1.0-x86_64-linux.tar.gz s3://BUCKET/   (then ReleaseBucket=BUCKET)
# The binary needs glibc 2.34 or later (Amazon Linux 2023 has 2.34).
set -euo pipefail
cd "$(dirname "$0")/../.."
version=$(awk -F'"' '/^version =/ {print $2; exit}' Cargo.toml)
out=${1:-residency-proxy-${version}-$(uname -m)-linux.tar.gz}
cargo build --release --quiet --bin residency-proxy
stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
install -m 0755 target/release/residency-proxy "$stage/"
install -m 0644 deploy/systemd/residency-proxy.service deploy/systemd/residency-proxy.sysusers \
  deploy/systemd/residency-proxy.logrotate "$stage/"
tar -czf "$out" -C "$stage" residency-proxy residency-proxy.service residency-proxy.sysusers residency-proxy.logrotate
echo "$out"
