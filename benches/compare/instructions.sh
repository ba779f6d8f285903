#!/usr/bin/env bash
# Instructions per request under callgrind: a figure that repeats exactly from run to run,
# where CPU time on this shared machine does not. The S1 shape (reverse proxy, keep-alive,
# the 100-byte page from nginx on loopback), the same configurations as run.sh (policy
# enforced and audited for residency-proxy), one peer at a time under
# `valgrind --tool=callgrind`: WARMUP_REQUESTS requests, the counters zeroed
# (`callgrind_control -z`), N requests with h2load over CONNS keep-alive connections, a dump.
# User-space instructions of every thread of the peer; the kernel's share (the same four
# syscalls a request for every peer) is not counted.
#
#   N=10000 WARMUP_REQUESTS=1000 CONNS=10 PEERS="residency-proxy haproxy" \
#     bash benches/compare/instructions.sh
#
# Needs valgrind (apt-get install -y valgrind), nginx, haproxy, h2load and a release build
# (cargo build --release). Every process it starts is stopped on exit.
set -euo pipefail

N=${N:-10000}
WARMUP_REQUESTS=${WARMUP_REQUESTS:-1000}
CONNS=${CONNS:-10}
PEERS=${PEERS:-residency-proxy haproxy}
PROXY_BIN=${PROXY_BIN:-target/release/residency-proxy}
# What peers.sh's configuration writers read (run.sh's defaults).
S6_CONNS=${S6_CONNS:-100}
SMALL_BYTES=${SMALL_BYTES:-100}
AUDIT_SIGNING=${AUDIT_SIGNING:-1}
KEEP_TMP=${KEEP_TMP:-0}
PROXY_CPU=${PROXY_CPU:-0}
LOAD_CPU=${LOAD_CPU:-1}

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
cd "$ROOT"
# shellcheck source=benches/compare/lib.sh
source "$HERE/lib.sh"
# shellcheck source=benches/compare/peers.sh
source "$HERE/peers.sh"

for tool in valgrind callgrind_control nginx haproxy h2load openssl ss; do
  command -v "$tool" >/dev/null 2>&1 || die "$tool not found"
done
[[ -x $PROXY_BIN ]] || die "$PROXY_BIN missing: run cargo build --release"
PROXY_BIN=$(realpath "$PROXY_BIN")

TMP=$(mktemp -d "${TMPDIR:-/tmp}/residency-instructions.XXXXXX")
chmod 755 "$TMP"
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

make_certs
start_origin
write_rp_config
write_haproxy_config

# wait_port PORT PID: until PORT listens (valgrind starts a program slowly), at most 300 s.
wait_port() {
  local i
  for ((i = 0; i < 3000; i++)); do
    alive "$2" || return 1
    [[ -n $(ss -Htln "src 127.0.0.1 and sport = :$1") ]] && return 0
    sleep 0.1
  done
  return 1
}

# load PORT COUNT: COUNT keep-alive GETs of / (h2load, HTTP/1.1); fails unless all succeeded.
load() {
  local out
  out=$(h2load --h1 -n "$2" -c "$CONNS" -t 1 "http://127.0.0.1:$1/" 2>&1) || {
    log "h2load failed: $out"
    return 1
  }
  grep -q "requests: $2 total, $2 started, $2 done, $2 succeeded" <<<"$out" || {
    log "not every request succeeded: $(grep '^requests:' <<<"$out")"
    return 1
  }
}

declare -A RESULT
for peer in $PEERS; do
  out=$TMP/callgrind.$peer.out
  case $peer in
    residency-proxy)
      rm -f "$RP/audit.jsonl"
      (cd "$RP" && exec valgrind --tool=callgrind --callgrind-out-file="$out" \
        "$PROXY_BIN" run --config "$RP/residency-proxy.toml") \
        >"$TMP/$peer.log" 2>&1 &
      port=$RP_REV
      ;;
    haproxy)
      valgrind --tool=callgrind --callgrind-out-file="$out" \
        haproxy -db -f "$HP/haproxy.cfg" >"$TMP/$peer.log" 2>&1 &
      port=$HP_REV
      ;;
    *) die "unknown peer $peer (residency-proxy, haproxy)" ;;
  esac
  pid=$!
  track "$pid"
  wait_port "$port" "$pid" || die "$peer did not start under valgrind (see $TMP/$peer.log)"
  load "$port" "$WARMUP_REQUESTS" || die "$peer: warm-up failed"
  callgrind_control -z "$pid" >/dev/null
  load "$port" "$N" || die "$peer: measured run failed"
  callgrind_control -d "$pid" >/dev/null
  stop_pid "$pid"
  # The one dump after zeroing; its "totals:" line is Ir.
  dump=$out.1
  [[ -s $dump ]] || die "$peer: no callgrind dump $dump"
  ir=$(awk '/^(totals|summary):/ { print $2; exit }' "$dump")
  [[ -n $ir ]] || die "$peer: no totals in $dump"
  RESULT[$peer]=$ir
  log "$peer: $ir instructions for $N requests ($dump)"
done

printf '\nInstructions per request (callgrind, user space, %d requests over %d keep-alive connections after %d to warm up; %s):\n\n' \
  "$N" "$CONNS" "$WARMUP_REQUESTS" "$(date -u '+%Y-%m-%d %H:%M UTC')"
printf '| peer | instructions / request |\n|---|---|\n'
for peer in $PEERS; do
  awk -v p="$peer" -v ir="${RESULT[$peer]}" -v n="$N" 'BEGIN { printf "| %s | %.0f |\n", p, ir / n }'
done
