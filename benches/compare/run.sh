#!/usr/bin/env bash
# Side-by-side comparison on loopback: residency-proxy, haproxy, squid and nginx alone
# ("direct"), same origin (nginx), same load tools, same pinning, interleaved rounds.
# Within a round: first the memory rows, peer by peer, each on freshly started processes; then
# every peer is started (each on its own ports, all pinned to PROXY_CPU) and the load scenarios
# run interleaved: for each scenario, every peer in turn, before the next scenario (so drift of
# the shared machine hits all peers of a row alike). The peer order rotates from round to round
# and from scenario to scenario; S6 is the last scenario, and each peer is stopped right after
# its last one. See benches/compare/README.md. Usage, from anywhere:
#
#   bash benches/compare/run.sh            # installs what is missing (apt-get), builds, runs
#
# Environment (all optional):
#   DURATION=10       seconds of each measured run
#   WARMUP=2          seconds of the unmeasured warm-up before each measured run (0: none)
#   ROUNDS=3          rounds; each runs every scenario once for every peer, the peer order
#                     rotated from round to round and from scenario to scenario
#   PEERS="residency-proxy haproxy squid direct"   peers to run (the table keeps all columns)
#   SCENARIOS="s1 s2 s3t s3b s4h s4k s5 mem s6"    scenarios to run
#   CONCURRENCY=50    wrk connections (S1, S2, S4 keep-alive), connect_rate loops (S3)
#   BULK_CONCURRENCY=50  wrk connections for S5 (1 MiB)
#   TLS_CONCURRENCY=20   tls_handshake loops (S4 handshakes)
#   HOLD_CONNS=1000   connections / tunnels held for the RSS rows
#   S6_CONNS=10000    wrk connections for S6
#   PROXY_CPU=0       CPU the peer under test is pinned to
#   LOAD_CPU=1        CPU the load tools, nginx and this script are pinned to
#   SMALL_BYTES=100   size of the origin's small body ("/"); "/1m" is 1 MiB
#   QUIET_MAX=25      before each measured run, wait until both CPUs are at most this % busy ...
#   QUIET_WAIT=60     ... for at most this many seconds, then run anyway (and say so)
#   OTHERS_MAX=25     a run during which other processes used more than this % of a core, ...
#   STEAL_MAX=10      ... or hypervisor steal exceeded this % of a core, is disturbed: it is
#   TRIES=3           repeated, up to TRIES times; the last is kept, and marked if disturbed
#   INSTALL=1         apt-get install what is missing (0: only check)
#   SKIP_BUILD=1      use the existing target/release binaries instead of running cargo
#   PROXY_BIN=PATH    the residency-proxy binary to measure (default target/release/residency-proxy;
#                     with SKIP_BUILD=1, an older build to compare with)
#   KEEP_TMP=1        keep the temporary directory (configs, logs, raw outputs), print its path
#   AUDIT_SIGNING=1   residency-proxy signs its audit trail: a key made by `residency-proxy
#                     keygen`, checkpoints at the defaults (0: hash chain only, no signatures)
#
# Only 127.0.0.1 is used, on free ports picked at start. Every load run is bounded (timeout,
# DURATION + 30 s). Every process this script starts is recorded by PID and stopped on exit
# (TERM, then KILL after 5 s); nothing else is signalled.
set -euo pipefail

DURATION=${DURATION:-10}
WARMUP=${WARMUP:-2}
ROUNDS=${ROUNDS:-3}
PEERS=${PEERS:-residency-proxy haproxy squid direct}
SCENARIOS=${SCENARIOS:-s1 s2 s3t s3b s4h s4k s5 mem s6}
CONCURRENCY=${CONCURRENCY:-50}
BULK_CONCURRENCY=${BULK_CONCURRENCY:-50}
TLS_CONCURRENCY=${TLS_CONCURRENCY:-20}
HOLD_CONNS=${HOLD_CONNS:-1000}
S6_CONNS=${S6_CONNS:-10000}
PROXY_CPU=${PROXY_CPU:-0}
LOAD_CPU=${LOAD_CPU:-1}
SMALL_BYTES=${SMALL_BYTES:-100}
QUIET_MAX=${QUIET_MAX:-25}
QUIET_WAIT=${QUIET_WAIT:-60}
OTHERS_MAX=${OTHERS_MAX:-25}
STEAL_MAX=${STEAL_MAX:-10}
TRIES=${TRIES:-3}
INSTALL=${INSTALL:-1}
SKIP_BUILD=${SKIP_BUILD:-0}
KEEP_TMP=${KEEP_TMP:-0}
AUDIT_SIGNING=${AUDIT_SIGNING:-1}
RUN_LIMIT=$((DURATION + 30))
LOADAVG_START=$(cut -d' ' -f1-3 /proc/loadavg)
START_UTC=$(date -u '+%Y-%m-%d %H:%M UTC')

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
cd "$ROOT"
# shellcheck source=benches/compare/lib.sh
source "$HERE/lib.sh"
# shellcheck source=benches/compare/peers.sh
source "$HERE/peers.sh"
# shellcheck source=benches/compare/table.sh
source "$HERE/table.sh"

# ---------------------------------------------------------------------------------------------
# Tools: install what is missing.

need=(nginx haproxy squid wrk openssl curl taskset ss cargo awk timeout getconf pgrep)
missing=()
for tool in "${need[@]}"; do command -v "$tool" >/dev/null 2>&1 || missing+=("$tool"); done
command -v h2load >/dev/null 2>&1 || missing+=(h2load)
if ((${#missing[@]})); then
  if [[ $INSTALL == 1 ]] && ((EUID == 0)) && command -v apt-get >/dev/null; then
    log "installing (missing: ${missing[*]}): apt-get install -y nginx-light haproxy squid wrk nghttp2-client curl"
    DEBIAN_FRONTEND=noninteractive apt-get install -y nginx-light haproxy squid wrk \
      nghttp2-client curl >&2 || die "apt-get install failed"
  fi
  for tool in "${need[@]}"; do
    command -v "$tool" >/dev/null 2>&1 ||
      die "$tool not found (apt-get install -y nginx-light haproxy squid wrk nghttp2-client curl)"
  done
fi

ncpu=$(nproc --all)
((PROXY_CPU < ncpu && LOAD_CPU < ncpu)) || die "PROXY_CPU/LOAD_CPU must be below $ncpu"
[[ $PROXY_CPU != "$LOAD_CPU" ]] || log "warning: the peer and the load tools share CPU $PROXY_CPU"
((ROUNDS >= 1 && DURATION >= 1)) || die "ROUNDS and DURATION must be at least 1"
# The peers of a round run side by side, one process each: every name once.
read -r -a peer_list <<<"$PEERS"
n=${#peer_list[@]}
((n >= 1)) || die "PEERS is empty"
for ((i = 0; i < n; i++)); do
  case ${peer_list[i]} in
    residency-proxy | haproxy | squid | direct) ;;
    *) die "PEERS: unknown peer '${peer_list[i]}' (residency-proxy haproxy squid direct)" ;;
  esac
  for ((j = 0; j < i; j++)); do
    [[ ${peer_list[j]} != "${peer_list[i]}" ]] || die "PEERS: ${peer_list[i]} named twice"
  done
done

# Enough descriptors for S6 (client and upstream side of every connection, in every process).
want_nofile=$((S6_CONNS * 6 + 8192))
if (($(ulimit -Hn) < want_nofile)); then ulimit -Hn "$want_nofile" 2>/dev/null || true; fi
ulimit -Sn "$(ulimit -Hn)"
(($(ulimit -n) >= want_nofile)) ||
  log "warning: open files limit $(ulimit -n) < $want_nofile: S6 may fail"
# This script's own polling stays off the peer's CPU.
taskset -pc "$LOAD_CPU" $$ >/dev/null

TMP=$(mktemp -d "${TMPDIR:-/tmp}/residency-compare.XXXXXX")
# nginx workers and squid drop privileges when started as root: let them reach their files.
chmod 755 "$TMP"
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
OURS=""
IDLE=()

# ---------------------------------------------------------------------------------------------
# Build.

PROXY_BIN=${PROXY_BIN:-target/release/residency-proxy}
TOOLS=(connect_rate tunnel_mbps tls_handshake hold_conns)
declare -A TOOL
if [[ $SKIP_BUILD == 1 ]]; then
  log "SKIP_BUILD=1: using existing binaries"
  for t in "${TOOLS[@]}"; do
    TOOL[$t]=$(find target/release/deps -maxdepth 1 -type f -executable -name "$t-*" \
      -printf '%T@ %p\n' 2>/dev/null | sort -rn | awk 'NR == 1 { print $2 }')
  done
else
  log "building residency-proxy and the load tools (release)"
  bench_args=()
  for t in "${TOOLS[@]}"; do bench_args+=(--bench "$t"); done
  build_json=$(cargo build --release --bin residency-proxy "${bench_args[@]}" \
    --message-format=json-render-diagnostics)
  for t in "${TOOLS[@]}"; do
    TOOL[$t]=$(grep -o "\"executable\":\"[^\"]*/$t-[^\"]*\"" <<<"$build_json" |
      tail -n1 | sed 's/^"executable":"//; s/"$//')
  done
fi
[[ -x $PROXY_BIN ]] || die "$PROXY_BIN missing: run cargo build --release"
for t in "${TOOLS[@]}"; do
  [[ -n ${TOOL[$t]} && -x ${TOOL[$t]} ]] || die "$t missing: cargo build --release --bench $t"
done
log "proxy: $PROXY_BIN; tools: ${TOOL[*]}"

# ---------------------------------------------------------------------------------------------
# Origin, certificates, configurations (ports fixed for the whole run).

make_certs
start_origin
write_rp_config
write_haproxy_config
write_squid_config

# wrk scripts: results on one RESULT line; one of them sends absolute-form requests.
report_lua='done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    "RESULT requests=%d bytes=%d duration_us=%d p50_us=%.1f p99_us=%.1f connect=%d read=%d write=%d status=%d timeout=%d\n",
    summary.requests, summary.bytes, summary.duration, latency:percentile(50),
    latency:percentile(99), e.connect, e.read, e.write, e.status, e.timeout))
end'
printf '%s\n' "$report_lua" >"$TMP/report.lua"
cat >"$TMP/absolute.lua" <<EOF
wrk.path = "http://127.0.0.1:$ORIGIN_PORT/"
wrk.headers["Host"] = "127.0.0.1:$ORIGIN_PORT"
$report_lua
EOF

# ---------------------------------------------------------------------------------------------
# One measured run.

# load_cmd KEY SECONDS: the load command of scenario KEY against the current peer (FWD, REV,
# TLS set by endpoints), into the array CMD.
load_cmd() {
  local key=$1 secs=$2 via
  local wrk=(wrk -t1 --latency --timeout 5s -d"${secs}s")
  case $key in
    s1) CMD=("${wrk[@]}" -c"$CONCURRENCY" -s "$TMP/report.lua" "http://127.0.0.1:$REV/") ;;
    s2) CMD=("${wrk[@]}" -c"$CONCURRENCY" -s "$TMP/absolute.lua" "http://127.0.0.1:$FWD/") ;;
    s3t | s3b)
      via=127.0.0.1:$FWD
      [[ $PEER == direct ]] && via=direct
      if [[ $key == s3t ]]; then
        CMD=("${TOOL[connect_rate]}" PROXY="$via" TARGET="127.0.0.1:$ORIGIN_PORT"
          CONCURRENCY="$CONCURRENCY" SECONDS="$secs")
      else
        CMD=("${TOOL[tunnel_mbps]}" PROXY="$via" TARGET="127.0.0.1:$ORIGIN_PORT" URI=/1m
          SECONDS="$secs")
      fi
      ;;
    s4h) CMD=("${TOOL[tls_handshake]}" ADDR="127.0.0.1:$TLS" SNI=bench.test
      CONCURRENCY="$TLS_CONCURRENCY" SECONDS="$secs") ;;
    s4k) CMD=("${wrk[@]}" -c"$CONCURRENCY" -s "$TMP/report.lua" "https://127.0.0.1:$TLS/") ;;
    s5) CMD=("${wrk[@]}" -c"$BULK_CONCURRENCY" -s "$TMP/report.lua" "http://127.0.0.1:$REV/1m") ;;
    s6) CMD=(wrk -t1 --latency --timeout 10s -d"${secs}s" -c"$S6_CONNS" -s "$TMP/report.lua"
      "http://127.0.0.1:$REV/") ;;
  esac
}

# measured KEY OUT: one measured run of scenario KEY into OUT, after waiting for a quiet
# machine; a disturbed run is repeated up to TRIES times. The load tool runs in the
# background while this shell samples the peer's VmRSS every 0.5 s. Sets RUN_TICKS (the
# peer's CPU ticks), RUN_LOAD (load tool + nginx), RUN_IDLE (the round's other peers, idle
# while waiting for their turn), RUN_OTHERS (every other process, and RUN_IDLE) and RUN_STEAL
# (hypervisor steal, all CPUs), the last four in % of one core; RUN_TRIES, RUN_DIST (1: the
# kept run was disturbed), RUN_RC, RUN_RSS_MAX (KiB).
#
# The idle peers (IDLE, set by use_peer) sit on PROXY_CPU with the peer under test, so CPU
# they use is taken from it: it is counted as other processes' CPU, for the disturbance
# check and the `others` figure alike. They are in OURS, which keeps others_ticks from
# counting them (or their children) a second time; their figure comes from ticks_of (the
# processes and their live children). Idle, they only wake for timers and for closing the
# odd idle connection (well under 1 % of a core), so this does not mark runs as disturbed; it
# does if one of them is still busy (say, closing thousands of connections) while another
# peer is measured, which is what the check is for. (Without this, they would not count at
# all: others_ticks leaves out this script's children, and every peer is one.)
measured() {
  local key=$1 out=$2 try quiet t0 t1 i0 i1 k0 k1 n0 n1 o0 o1 s0 s1 elapsed start_ns lp rss
  for ((try = 1; try <= TRIES; try++)); do
    quiet=$(wait_quiet) ||
      log "$PEER $key: CPUs still busy after ${QUIET_WAIT}s ($quiet): measuring anyway"
    load_cmd "$key" "$DURATION"
    t0=$(ticks_of "$PID")
    i0=$(ticks_of ${IDLE[@]+"${IDLE[@]}"})
    child_ticks
    k0=$CHILD_TICKS
    n0=$(ticks_of "$NGINX_PID")
    o0=$(others_ticks)
    s0=$(steal_ticks)
    start_ns=$(date +%s%N)
    RUN_RSS_MAX=0
    taskset -c "$LOAD_CPU" timeout "$RUN_LIMIT" "${CMD[@]}" >"$out" 2>&1 &
    lp=$!
    track "$lp"
    while alive "$lp"; do
      rss=$(rss_of "$PID")
      ((rss > RUN_RSS_MAX)) && RUN_RSS_MAX=$rss
      sleep 0.5
    done
    RUN_RC=0
    wait "$lp" || RUN_RC=$?
    stop_pid "$lp"
    elapsed=$(awk -v a="$start_ns" -v b="$(date +%s%N)" 'BEGIN { printf "%.3f\n", (b - a) / 1e9 }')
    t1=$(ticks_of "$PID")
    i1=$(ticks_of ${IDLE[@]+"${IDLE[@]}"})
    child_ticks
    k1=$CHILD_TICKS
    n1=$(ticks_of "$NGINX_PID")
    o1=$(others_ticks)
    s1=$(steal_ticks)
    RUN_TICKS=$((t1 - t0))
    if [[ $PEER == direct ]]; then
      RUN_LOAD=$(pct $((k1 - k0)) "$elapsed")
    else
      RUN_LOAD=$(pct $((k1 - k0 + n1 - n0)) "$elapsed")
    fi
    RUN_IDLE=$(pct $((i1 - i0)) "$elapsed")
    RUN_OTHERS=$(pct $((o1 - o0 + i1 - i0)) "$elapsed")
    RUN_STEAL=$(pct $((s1 - s0)) "$elapsed")
    RUN_TRIES=$try
    RUN_DIST=0
    ((RUN_OTHERS > OTHERS_MAX || RUN_STEAL > STEAL_MAX)) && RUN_DIST=1
    ((RUN_DIST == 0 || RUN_RC != 0)) && return 0
    log "$PEER $key: disturbed (other processes ${RUN_OTHERS}% of a core, of which idle peers ${RUN_IDLE}%, limit $OTHERS_MAX; steal ${RUN_STEAL}%, limit $STEAL_MAX) in try $try of $TRIES"
  done
  log "$PEER $key: kept a disturbed run (marked in the table)"
}

put() { echo "$1=$2" >>"$KV"; }

# scenario KEY: warm-up, measured run, figures into $KV.
scenario() {
  local key=$1 out=$TMP/r$ROUND/$PEER.$1.txt ops rate p99="" errs na=""
  case $key in
    s3t | s3b) ((CONNECT_OK)) || [[ $PEER == direct ]] || na=$NA_CONNECT ;;
    s4h | s4k) [[ -n $TLS ]] || na=$NA_TLS ;;
  esac
  if [[ -n $na ]]; then
    put "${key}_na" "$na"
    return 0
  fi
  if ((WARMUP > 0)) && [[ $key != s6 ]]; then
    load_cmd "$key" "$WARMUP"
    taskset -c "$LOAD_CPU" timeout "$RUN_LIMIT" "${CMD[@]}" >"$out.warmup" 2>&1 ||
      log "$PEER $key: warm-up failed: $(tail -n 3 "$out.warmup")"
  fi
  measured "$key" "$out"
  sed 's/^/    /' "$out" >&2
  if ((RUN_RC != 0)) || ! grep -q '^RESULT ' "$out"; then
    log "$PEER $key: load run failed (exit $RUN_RC)"
    put "${key}_fail" "exit $RUN_RC: $(grep -m1 -iE 'error|refused' "$out" | tr '|=' '/:' || true)"
    return 0
  fi
  case $key in
    s1 | s2 | s4k | s5 | s6)
      ops=$(field "$out" requests)
      if [[ $key == s5 ]]; then
        rate=$(awk -v b="$(field "$out" bytes)" -v d="$(field "$out" duration_us)" 'BEGIN { printf "%.1f\n", b / d }')
      else
        rate=$(awk -v r="$ops" -v d="$(field "$out" duration_us)" 'BEGIN { printf "%.0f\n", r / (d / 1e6) }')
      fi
      p99=$(awk -v u="$(field "$out" p99_us)" 'BEGIN { printf "%.2f\n", u / 1000 }')
      errs=$(($(field "$out" connect) + $(field "$out" read) + $(field "$out" write) +
        $(field "$out" status) + $(field "$out" timeout)))
      ;;
    s3t)
      ops=$(field "$out" completed)
      rate=$(field "$out" tunnels_per_s)
      p99=$(field "$out" p99_ms)
      errs=$(field "$out" errors)
      ;;
    s3b)
      ops=$(field "$out" responses)
      rate=$(field "$out" mb_per_s)
      errs=$(field "$out" errors)
      ;;
    s4h)
      ops=$(field "$out" completed)
      rate=$(field "$out" handshakes_per_s)
      p99=$(field "$out" p99_ms)
      errs=$(field "$out" errors)
      ;;
  esac
  put "${key}_rate" "$rate"
  [[ -n $p99 ]] && put "${key}_p99" "$p99"
  put "${key}_ops" "$ops"
  put "${key}_cpu" "$(awk -v t="$RUN_TICKS" -v hz="$CLK_TCK" -v n="$ops" 'BEGIN { if (n > 0) printf "%.1f\n", t / hz * 1e6 / n; else print "-" }')"
  put "${key}_err" "$errs"
  put "${key}_load" "$RUN_LOAD"
  put "${key}_others" "$RUN_OTHERS"
  put "${key}_steal" "$RUN_STEAL"
  put "${key}_tries" "$RUN_TRIES"
  put "${key}_dist" "$RUN_DIST"
  [[ $key == s6 ]] && put s6_rss "$(kib_to_mib "$RUN_RSS_MAX")"
  log "$PEER $key: rate $rate ops $ops errors $errs cpu-ticks $RUN_TICKS load ${RUN_LOAD}% others ${RUN_OTHERS}% (idle peers ${RUN_IDLE}%) steal ${RUN_STEAL}% tries $RUN_TRIES"
}

# hold KEY MODE ADDR [ARGS...]: hold HOLD_CONNS connections with hold_conns, read the peer's
# VmRSS once all are open (after 1 s to settle), put KEY (MiB) and KEY_open.
hold() {
  local key=$1 mode=$2 addr=$3 out=$TMP/r$ROUND/$PEER.$1.txt hp i open
  shift 3
  taskset -c "$LOAD_CPU" timeout "$RUN_LIMIT" "${TOOL[hold_conns]}" MODE="$mode" ADDR="$addr" \
    N="$HOLD_CONNS" HOLD_SECONDS="$((DURATION + 20))" "$@" >"$out" 2>&1 &
  hp=$!
  track "$hp"
  for ((i = 0; i < 300; i++)); do
    grep -q '^READY ' "$out" && break
    alive "$hp" || break
    sleep 0.1
  done
  open=$(grep '^READY ' "$out" | tr ' ' '\n' | awk -F= '$1 == "open" { print $2 }')
  if [[ -z $open ]]; then
    log "$PEER $key: hold_conns did not get ready: $(tail -n 5 "$out")"
    put "${key}_fail" "hold_conns did not get ready"
    stop_pid "$hp"
    return 0
  fi
  sleep 1
  put "$key" "$(kib_to_mib "$(rss_of "$PID")")"
  put "${key}_open" "$open"
  stop_pid "$hp"
  log "$PEER $key: $open open, RSS $(tail -n 2 "$KV" | head -n 1)"
}

# mem: RSS idle, with HOLD_CONNS keep-alive client connections (reverse path), and (fresh
# process) with HOLD_CONNS open tunnels.
mem_rows() {
  endpoints "$PEER"
  start_peer "$PEER"
  check_peer "$PEER"
  sleep 1
  put rss_idle "$(kib_to_mib "$(rss_of "$PID")")"
  hold rss_ka request "127.0.0.1:$REV" HOST_HEADER="127.0.0.1:$REV"
  stop_peer "$PEER"
  if ((CONNECT_OK)); then
    start_peer "$PEER"
    hold rss_tun tunnel "127.0.0.1:$FWD" TARGET="127.0.0.1:$ORIGIN_PORT"
    stop_peer "$PEER"
  elif [[ $PEER == direct ]]; then
    put rss_tun_na "no tunnels without a proxy"
  else
    put rss_tun_na "$NA_CONNECT"
  fi
}

# ---------------------------------------------------------------------------------------------
# Rounds. In each: the memory rows, peer by peer (fresh processes, nothing else of ours on
# PROXY_CPU); then every peer started at once (distinct ports; "direct" is the origin, always
# running) and checked; then, for each scenario, every peer in turn; each peer is stopped after
# its last scenario (S6 when it runs: a proxy left idle after S6 would keep up to thousands of
# upstream connections open to nginx through the next peer's S6); its log lines are counted
# once all are stopped. The peer order rotates by one from round to round (the memory rows
# included) and by one more from scenario to scenario within a round, so no peer always runs
# a scenario first (the cyclic order stays the same: each peer follows the same one, unless
# it is first).

declare -A RUN_PID # the round's running peers: PEER -> PID (direct: nginx)

# use_peer PEER: make PEER, one of the round's running peers, the one under test: sets PEER,
# PID, KV, the endpoints, IDLE (the PIDs of the round's other running peers but nginx) and OURS
# (the PIDs that others_ticks leaves out: see measured).
use_peer() {
  local p
  PEER=$1
  PID=${RUN_PID[$PEER]}
  KV=$TMP/r$ROUND/$PEER.kv
  endpoints "$PEER"
  IDLE=()
  for p in "${!RUN_PID[@]}"; do
    [[ $p == "$PEER" || $p == direct ]] || IDLE+=("${RUN_PID[$p]}")
  done
  OURS="$PID $NGINX_PID${IDLE[*]+ ${IDLE[*]}}"
}

# round_stop PEER: stop one of the round's running peers.
round_stop() {
  stop_peer "$1" "${RUN_PID[$1]}"
  unset 'RUN_PID[$1]'
}

load_keys=()
for key in s1 s2 s3t s3b s4h s4k s5 s6; do # S6, the heaviest, last
  [[ " $SCENARIOS " == *" $key "* ]] || continue
  load_keys+=("$key")
done
nkeys=${#load_keys[@]}

for ((round = 1; round <= ROUNDS; round++)); do
  ROUND=$round
  mkdir -p "$TMP/r$ROUND"
  order=()
  for ((i = 0; i < n; i++)); do order+=("${peer_list[(i + round - 1) % n]}"); done
  log "round $ROUND: peers ${order[*]}"
  for peer in "${order[@]}"; do
    PEER=$peer
    KV=$TMP/r$ROUND/$PEER.kv
    : >"$KV"
    if [[ " $SCENARIOS " == *" mem "* ]]; then
      endpoints "$PEER"
      mem_rows
    fi
  done
  RUN_PID=()
  for peer in "${order[@]}"; do
    start_peer "$peer"
    RUN_PID[$peer]=$PID
    log "round $ROUND: $peer PID $PID (CPU $PROXY_CPU)"
    check_peer "$peer"
  done
  for ((j = 0; j < nkeys; j++)); do
    key=${load_keys[j]}
    for ((i = 0; i < n; i++)); do
      peer=${order[(i + j) % n]}
      use_peer "$peer"
      scenario "$key"
      ((j < nkeys - 1)) || round_stop "$peer"
    done
  done
  for peer in "${order[@]}"; do
    [[ -z ${RUN_PID[$peer]+set} ]] || round_stop "$peer"
  done
  for peer in "${order[@]}"; do
    [[ $peer == direct ]] || log_counts "$peer" >>"$TMP/r$ROUND/$peer.kv"
  done
done
stop_pid "$NGINX_PID"

print_tables
