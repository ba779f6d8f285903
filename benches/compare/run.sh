#!/usr/bin/env bash
# Side-by-side load comparison: residency-proxy vs. squid, on loopback, same origin (nginx),
# same load tools (wrk for absolute-form HTTP, benches/connect_rate.rs for CONNECT tunnels).
# See benches/compare/README.md. Usage, from anywhere:
#
#   bash benches/compare/run.sh
#
# Environment (all optional):
#   DURATION=10      seconds of each measured run
#   WARMUP=2         seconds of the unmeasured warm-up before each measured run
#   CONCURRENCY=50   wrk connections / connect_rate loops
#   ROUNDS=3         sessions per proxy, alternating (A B, B A, A B, ...); the table shows medians
#   PROXY_CPU=0      CPU the proxy under test is pinned to
#   LOAD_CPU=1       CPU the load tool and nginx are pinned to
#   BODY_BYTES=1024  size of the origin's static body
#   QUIET_MAX=25     before each measured run, wait until both CPUs are at most this % busy ...
#   QUIET_WAIT=60    ... for at most this many seconds, then run anyway (and say so)
#   OTHERS_MAX=25    a measured run during which other processes used more than this % of a
#   TRIES=3          core is repeated, up to TRIES times (the last is kept, and shown as such)
#   SKIP_BUILD=1     use the existing target/release binaries instead of running cargo
#   KEEP_TMP=1       keep the temporary directory (configs, logs, raw outputs), print its path
#
# Only loopback addresses are used. Every process this script starts is recorded by PID and
# stopped on exit (TERM, then KILL after 5 s); nothing else is signalled.
set -euo pipefail

DURATION=${DURATION:-10}
WARMUP=${WARMUP:-2}
CONCURRENCY=${CONCURRENCY:-50}
ROUNDS=${ROUNDS:-3}
PROXY_CPU=${PROXY_CPU:-0}
LOAD_CPU=${LOAD_CPU:-1}
BODY_BYTES=${BODY_BYTES:-1024}
QUIET_MAX=${QUIET_MAX:-25}
QUIET_WAIT=${QUIET_WAIT:-60}
OTHERS_MAX=${OTHERS_MAX:-25}
TRIES=${TRIES:-3}
SKIP_BUILD=${SKIP_BUILD:-0}
KEEP_TMP=${KEEP_TMP:-0}
# Upper bound on any single load-tool run, whatever DURATION says.
RUN_LIMIT=$((DURATION + 30))
LOADAVG_START=$(cut -d' ' -f1-3 /proc/loadavg)

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$ROOT"

log() { printf '[compare] %s\n' "$*" >&2; }
die() {
  printf '[compare] error: %s\n' "$*" >&2
  exit 1
}

for tool in nginx squid wrk taskset curl ss cargo awk timeout getconf pgrep; do
  command -v "$tool" >/dev/null 2>&1 ||
    die "$tool not found (apt-get install -y squid wrk nginx curl util-linux iproute2)"
done
ncpu=$(nproc --all)
((PROXY_CPU < ncpu && LOAD_CPU < ncpu)) || die "PROXY_CPU/LOAD_CPU must be below $ncpu"
[[ $PROXY_CPU != "$LOAD_CPU" ]] || log "warning: proxy and load tool share CPU $PROXY_CPU"
((ROUNDS >= 1 && DURATION >= 1)) || die "ROUNDS and DURATION must be at least 1"

# ---------------------------------------------------------------------------------------------
# Process bookkeeping: only PIDs started here are ever signalled. A child that has exited stays
# a zombie (so its PID cannot be reused) until stop_pid reaps it with `wait`.

TMP=$(mktemp -d "${TMPDIR:-/tmp}/residency-compare.XXXXXX")
# nginx workers and squid drop privileges when started as root: let them reach their files.
chmod 755 "$TMP"
STARTED=()

alive() {
  [[ -r /proc/$1/status ]] && ! grep -q '^State:[[:space:]]*Z' "/proc/$1/status" 2>/dev/null
}

stop_pid() {
  local pid=$1 i p
  if alive "$pid"; then
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < 50; i++)); do
      alive "$pid" || break
      sleep 0.1
    done
    if alive "$pid"; then
      log "PID $pid still running 5 s after TERM: KILL"
      kill -KILL "$pid" 2>/dev/null || true
    fi
  fi
  wait "$pid" 2>/dev/null || true
  local keep=()
  for p in "${STARTED[@]+"${STARTED[@]}"}"; do [[ $p == "$pid" ]] || keep+=("$p"); done
  STARTED=("${keep[@]+"${keep[@]}"}")
}

cleanup() {
  local rc=$? i
  for ((i = ${#STARTED[@]} - 1; i >= 0; i--)); do
    stop_pid "${STARTED[i]}"
  done
  if [[ $KEEP_TMP == 1 ]]; then
    log "kept $TMP"
  else
    rm -rf "$TMP"
  fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# A free TCP port on 127.0.0.1, below the ephemeral range.
pick_port() {
  local p i
  for ((i = 0; i < 200; i++)); do
    p=$((10000 + RANDOM % 20000))
    if [[ -z $(ss -Htln "sport = :$p") ]]; then
      echo "$p"
      return 0
    fi
  done
  die "no free port found"
}

# wait_listen PORT PID NAME: until something listens on 127.0.0.1:PORT (at most 15 s).
wait_listen() {
  local port=$1 pid=$2 name=$3 i
  for ((i = 0; i < 150; i++)); do
    alive "$pid" || return 1
    [[ -n $(ss -Htln "src 127.0.0.1 and sport = :$port") ]] && return 0
    sleep 0.1
  done
  log "$name is not listening on 127.0.0.1:$port after 15 s"
  return 1
}

CLK_TCK=$(getconf CLK_TCK)

# utime + stime of a process, in clock ticks.
proc_ticks() {
  local stat
  stat=$(<"/proc/$1/stat")
  stat=${stat##*) }
  awk '{ print $12 + $13 }' <<<"$stat"
}

# Busy ticks (everything but idle and iowait) of CPU N, from /proc/stat.
cpu_busy_ticks() {
  awk -v c="cpu$1" '$1 == c { print $2 + $3 + $4 + $7 + $8 + $9 }' /proc/stat
}

# CPU time, in clock ticks, of every process that is not ours (this script and its children,
# the proxy, nginx and its workers), including the time of their reaped children (so a short
# compiler run that ends mid-measurement still counts). Differences of this over a run tell
# how much other work shared the machine: with two CPUs, it shared ours.
others_ticks() {
  cat /proc/[0-9]*/stat 2>/dev/null | awk -v excl="$$ $PID $NGINX_PID" '
    BEGIN { n = split(excl, e, " "); for (i = 1; i <= n; i++) ours[e[i]] = 1 }
    {
      pid = $1
      rest = $0
      sub(/.*\) /, "", rest)
      split(rest, f, " ")
      if (!(pid in ours) && !(f[2] in ours)) t += f[12] + f[13] + f[14] + f[15]
    }
    END { printf "%d\n", t }'
}

rss_kib() { awk '/^VmRSS:/ { print $2 }' "/proc/$1/status"; }

# pct TICKS SECONDS: percentage of one core.
pct() { awk -v t="$1" -v hz="$CLK_TCK" -v d="$2" 'BEGIN { printf "%.0f\n", 100 * t / hz / d }'; }

# The machine is shared: before a measured run, wait (up to QUIET_WAIT s) until the proxy's and
# the load tool's CPUs are both at most QUIET_MAX % busy over one second. Prints the busy
# figures it last saw; returns 1 if it gave up waiting.
wait_quiet() {
  local start=$SECONDS a0 b0 a1 b1 pa pb
  while :; do
    a0=$(cpu_busy_ticks "$PROXY_CPU")
    b0=$(cpu_busy_ticks "$LOAD_CPU")
    sleep 1
    a1=$(cpu_busy_ticks "$PROXY_CPU")
    b1=$(cpu_busy_ticks "$LOAD_CPU")
    pa=$(pct $((a1 - a0)) 1)
    pb=$(pct $((b1 - b0)) 1)
    if ((pa <= QUIET_MAX && pb <= QUIET_MAX)); then
      echo "cpu$PROXY_CPU ${pa}% cpu$LOAD_CPU ${pb}%"
      return 0
    fi
    if ((SECONDS - start >= QUIET_WAIT)); then
      echo "cpu$PROXY_CPU ${pa}% cpu$LOAD_CPU ${pb}%"
      return 1
    fi
    sleep 2
  done
}

# ---------------------------------------------------------------------------------------------
# Build.

PROXY_BIN=target/release/residency-proxy
if [[ $SKIP_BUILD == 1 ]]; then
  log "SKIP_BUILD=1: using existing binaries"
  CONNECT_RATE=$(ls -t target/release/deps/connect_rate-* 2>/dev/null | awk '!/\.d$/ && !n++' || true)
else
  log "building residency-proxy and the connect_rate bench (release)"
  build_json=$(cargo build --release --bin residency-proxy --bench connect_rate \
    --message-format=json-render-diagnostics)
  CONNECT_RATE=$(grep -o '"executable":"[^"]*connect_rate-[^"]*"' <<<"$build_json" |
    tail -n1 | sed 's/^"executable":"//; s/"$//')
fi
[[ -x $PROXY_BIN ]] || die "$PROXY_BIN missing: run cargo build --release"
[[ -n $CONNECT_RATE && -x $CONNECT_RATE ]] ||
  die "connect_rate binary missing: run cargo build --release --bench connect_rate"
log "proxy: $PROXY_BIN; load tool: $CONNECT_RATE"

# ---------------------------------------------------------------------------------------------
# Origin: nginx, one worker, a static body, no access log. Pinned to the load tool's CPU.

ORIGIN_PORT=$(pick_port)
NG=$TMP/nginx
mkdir -p "$NG/www" "$NG/tmp"
head -c "$BODY_BYTES" /dev/zero | tr '\0' 'x' >"$NG/www/index.html"
chmod -R a+rX "$NG"
nginx_user=""
if ((EUID == 0)); then
  nginx_user="user nobody $(id -gn nobody);"
fi
cat >"$NG/nginx.conf" <<EOF
$nginx_user
worker_processes 1;
daemon off;
pid $NG/nginx.pid;
error_log $NG/error.log warn;
events { worker_connections 4096; }
http {
    access_log off;
    sendfile on;
    tcp_nodelay on;
    keepalive_timeout 60s;
    keepalive_requests 1000000;
    default_type text/html;
    client_body_temp_path $NG/tmp/body;
    proxy_temp_path $NG/tmp/proxy;
    fastcgi_temp_path $NG/tmp/fastcgi;
    uwsgi_temp_path $NG/tmp/uwsgi;
    scgi_temp_path $NG/tmp/scgi;
    server {
        listen 127.0.0.1:$ORIGIN_PORT;
        root $NG/www;
        index index.html;
    }
}
EOF
nginx -t -q -e "$NG/error.log" -p "$NG" -c "$NG/nginx.conf" || die "nginx -t failed"
taskset -c "$LOAD_CPU" nginx -e "$NG/error.log" -p "$NG" -c "$NG/nginx.conf" \
  >"$NG/stdout.log" 2>&1 &
NGINX_PID=$!
STARTED+=("$NGINX_PID")
wait_listen "$ORIGIN_PORT" "$NGINX_PID" nginx || die "nginx did not start: $(cat "$NG/error.log")"
got=$(curl -sS --noproxy '*' --max-time 5 -o /dev/null -w '%{http_code} %{size_download}' \
  "http://127.0.0.1:$ORIGIN_PORT/") || true
[[ $got == "200 $BODY_BYTES" ]] || die "origin check: got '$got', want '200 $BODY_BYTES'"
log "origin: nginx PID $NGINX_PID on 127.0.0.1:$ORIGIN_PORT (CPU $LOAD_CPU), $BODY_BYTES-byte body"

# wrk script: absolute-form GET of the origin, sent to the proxy; results on one RESULT line.
cat >"$TMP/absolute.lua" <<EOF
wrk.path = "http://127.0.0.1:$ORIGIN_PORT/"
wrk.headers["Host"] = "127.0.0.1:$ORIGIN_PORT"
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    "RESULT requests=%d duration_us=%d p50_us=%.1f p99_us=%.1f connect=%d read=%d write=%d status=%d timeout=%d\n",
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99),
    e.connect, e.read, e.write, e.status, e.timeout))
end
EOF

# ---------------------------------------------------------------------------------------------
# Proxy configurations (ports fixed for the whole run).

RP_PORT=$(pick_port)
SQ_PORT=$(pick_port)
while [[ $SQ_PORT == "$RP_PORT" || $SQ_PORT == "$ORIGIN_PORT" ]]; do SQ_PORT=$(pick_port); done

RP=$TMP/residency-proxy
mkdir -p "$RP"
cat >"$RP/residency-proxy.toml" <<EOF
# Generated by benches/compare/run.sh. Everything else is the default: uk-adequate profile,
# embedded GeoIP, policy enforced, one audit record per request.
[audit]
output = "audit.jsonl"

[limits]
drain_timeout = "2s"

[[listener]]
name = "egress"
bind = "127.0.0.1:$RP_PORT"
allowed_ports = [$ORIGIN_PORT]

[policy]
# The origin is on loopback.
internal_allowed = ["127.0.0.0/8"]
EOF
"$PROXY_BIN" check "$RP/residency-proxy.toml" >&2 || die "residency-proxy check failed"

SQ=$TMP/squid
mkdir -p "$SQ"
squid_user=""
if ((EUID == 0)); then
  # squid will not keep root: it switches to cache_effective_user, which must own its files.
  squid_user="cache_effective_user proxy"
fi
cat >"$SQ/squid.conf" <<EOF
# Generated by benches/compare/run.sh.
http_port 127.0.0.1:$SQ_PORT
workers 1
acl SSL_ports port $ORIGIN_PORT
acl CONNECT method CONNECT
http_access deny CONNECT !SSL_ports
http_access allow localhost
http_access deny all
cache deny all
access_log stdio:$SQ/access.log
cache_log $SQ/cache.log
cache_store_log none
pid_filename $SQ/squid.pid
coredump_dir $SQ
netdb_filename none
pinger_enable off
visible_hostname localhost
shutdown_lifetime 1 seconds
$squid_user
EOF
if ((EUID == 0)); then chown -R proxy: "$SQ"; fi
squid -k parse -f "$SQ/squid.conf" >"$SQ/parse.log" 2>&1 || die "squid -k parse: $(cat "$SQ/parse.log")"
if grep -qE 'ERROR|FATAL' "$SQ/parse.log"; then
  die "squid -k parse: $(grep -E 'ERROR|FATAL' "$SQ/parse.log")"
fi

# start_proxy NAME: start it pinned to PROXY_CPU, wait until it listens; sets PID and PORT.
start_proxy() {
  local i
  case $1 in
    residency-proxy)
      rm -f "$RP/audit.jsonl"
      taskset -c "$PROXY_CPU" "$PROXY_BIN" run --config "$RP/residency-proxy.toml" \
        >"$RP/stdout.log" 2>"$RP/stderr.log" &
      PID=$!
      PORT=$RP_PORT
      STARTED+=("$PID")
      for ((i = 0; i < 300; i++)); do
        grep -q 'listener egress on' "$RP/stderr.log" 2>/dev/null && break
        alive "$PID" || die "residency-proxy exited: $(cat "$RP/stderr.log")"
        sleep 0.1
      done
      wait_listen "$PORT" "$PID" residency-proxy || die "residency-proxy did not start"
      ;;
    squid)
      rm -f "$SQ/access.log"
      taskset -c "$PROXY_CPU" squid -N -f "$SQ/squid.conf" >"$SQ/stdout.log" 2>&1 &
      PID=$!
      PORT=$SQ_PORT
      STARTED+=("$PID")
      wait_listen "$PORT" "$PID" squid || die "squid did not start: $(tail -n 20 "$SQ/cache.log")"
      ;;
  esac
}

# Count log lines and lines without a 2xx status, after the proxy stopped (and flushed).
log_counts() {
  local lines non2xx
  case $1 in
    residency-proxy)
      lines=$(wc -l <"$RP/audit.jsonl")
      non2xx=$(grep -cv '"status":2[0-9][0-9]' "$RP/audit.jsonl" || true)
      if ((non2xx > 0)); then
        log "residency-proxy: audit records without a 2xx status (first 3):"
        grep -m3 -v '"status":2[0-9][0-9]' "$RP/audit.jsonl" >&2 || true
      fi
      if grep -qE ' (WARN|ERROR) |audit_overflow' "$RP/stderr.log"; then
        log "residency-proxy: WARN/ERROR on stderr (first 5):"
        grep -m5 -E ' (WARN|ERROR) |audit_overflow' "$RP/stderr.log" >&2 || true
      fi
      ;;
    squid)
      lines=$(wc -l <"$SQ/access.log")
      non2xx=$(awk '$4 !~ /\/2[0-9][0-9]$/' "$SQ/access.log" | wc -l)
      if ((non2xx > 0)); then
        log "squid: access.log lines without a 2xx status (first 3):"
        awk '$4 !~ /\/2[0-9][0-9]$/ && n++ < 3' "$SQ/access.log" >&2
      fi
      ;;
  esac
  echo "log_lines=$lines"
  echo "log_non2xx=$non2xx"
}

# field FILE KEY: value of KEY=... on the RESULT line of FILE.
field() {
  grep '^RESULT ' "$1" | tail -n1 | tr ' ' '\n' | awk -F= -v k="$2" '$1 == k { print $2 }'
}

# Sets CHILD_TICKS: CPU time of this shell's finished children (the load tools), in clock ticks.
# `times` must run in this shell, not in a $(...) subshell, so this sets a variable.
child_ticks() {
  times >"$TMP/times.txt"
  CHILD_TICKS=$(awk -v hz="$CLK_TCK" 'NR == 2 {
    t = 0
    for (i = 1; i <= 2; i++) { split($i, a, /[ms]/); t += a[1] * 60 + a[2] }
    printf "%d\n", t * hz
  }' "$TMP/times.txt")
}

# nginx master and worker CPU time, in clock ticks.
nginx_ticks() {
  local p t=0
  for p in "$NGINX_PID" $(pgrep -P "$NGINX_PID" || true); do
    t=$((t + $(proc_ticks "$p" 2>/dev/null || echo 0)))
  done
  echo "$t"
}

# measured KIND OUT: one measured run (KIND wrk or cr) into OUT, after waiting for a quiet
# machine. A run during which other processes used more than OTHERS_MAX % of a core is
# repeated, up to TRIES times (the last one is kept, and flagged). Sets RUN_PROXY (proxy CPU),
# RUN_LOAD (load tool + nginx CPU), RUN_OTHERS (every other process, on either CPU), all in %
# of one core, and RUN_TRIES.
measured() {
  local kind=$1 out=$2 try quiet t0 t1 k0 k1 n0 n1 o0 o1 elapsed start_ns
  for ((try = 1; try <= TRIES; try++)); do
    quiet=$(wait_quiet) ||
      log "$kind: CPUs still busy after ${QUIET_WAIT}s ($quiet): measuring anyway"
    t0=$(proc_ticks "$PID")
    child_ticks
    k0=$CHILD_TICKS
    n0=$(nginx_ticks)
    o0=$(others_ticks)
    start_ns=$(date +%s%N)
    case $kind in
      wrk)
        taskset -c "$LOAD_CPU" timeout "$RUN_LIMIT" wrk -t1 -c"$CONCURRENCY" -d"${DURATION}s" \
          --latency --timeout 5s -s "$TMP/absolute.lua" "http://127.0.0.1:$PORT/" >"$out" 2>&1 ||
          die "wrk failed: $(cat "$out")"
        ;;
      cr)
        taskset -c "$LOAD_CPU" timeout "$RUN_LIMIT" "$CONNECT_RATE" PROXY="127.0.0.1:$PORT" \
          TARGET="127.0.0.1:$ORIGIN_PORT" CONCURRENCY="$CONCURRENCY" SECONDS="$DURATION" \
          >"$out" 2>&1 || die "connect_rate failed: $(cat "$out")"
        ;;
    esac
    elapsed=$(awk -v a="$start_ns" -v b="$(date +%s%N)" 'BEGIN { printf "%.3f\n", (b - a) / 1e9 }')
    t1=$(proc_ticks "$PID")
    child_ticks
    k1=$CHILD_TICKS
    n1=$(nginx_ticks)
    o1=$(others_ticks)
    RUN_PROXY=$(pct $((t1 - t0)) "$elapsed")
    RUN_LOAD=$(pct $((k1 - k0 + n1 - n0)) "$elapsed")
    RUN_OTHERS=$(pct $((o1 - o0)) "$elapsed")
    RUN_TRIES=$try
    if ((RUN_OTHERS <= OTHERS_MAX)); then
      return 0
    fi
    log "$kind: other processes used ${RUN_OTHERS}% of a core (limit $OTHERS_MAX%) during try $try of $TRIES"
  done
  log "$kind: kept a run disturbed by other processes (see the table)"
}

# session NAME ROUND: start the proxy, check it, warm up, measure both workloads, record RSS,
# stop it. Raw outputs in $TMP/rROUND/NAME.*, figures in $TMP/rROUND/NAME.kv (KEY=VALUE).
session() {
  local name=$1 round=$2
  local out=$TMP/r$round/$name kv code f
  mkdir -p "$TMP/r$round"
  kv=$out.kv
  : >"$kv"
  start_proxy "$name"
  log "round $round: $name PID $PID on 127.0.0.1:$PORT (CPU $PROXY_CPU)"

  code=$(curl -sS --noproxy '' --max-time 5 -x "http://127.0.0.1:$PORT" -o /dev/null \
    -w '%{http_code} %{size_download}' "http://127.0.0.1:$ORIGIN_PORT/") || true
  [[ $code == "200 $BODY_BYTES" ]] || die "$name: absolute-form check got '$code'"
  code=$(curl -sS --noproxy '' --max-time 5 -p -x "http://127.0.0.1:$PORT" -o /dev/null \
    -w '%{http_code} %{size_download}' "http://127.0.0.1:$ORIGIN_PORT/") || true
  [[ $code == "200 $BODY_BYTES" ]] || die "$name: CONNECT check got '$code'"

  # (a) absolute-form GET, keep-alive.
  taskset -c "$LOAD_CPU" timeout "$RUN_LIMIT" wrk -t1 -c"$CONCURRENCY" -d"${WARMUP}s" \
    --timeout 5s -s "$TMP/absolute.lua" "http://127.0.0.1:$PORT/" >"$out.wrk-warmup.txt" 2>&1 ||
    die "$name: wrk warm-up failed: $(cat "$out.wrk-warmup.txt")"
  log "round $round: $name: wrk -t1 -c$CONCURRENCY -d${DURATION}s --latency"
  measured wrk "$out.wrk.txt"
  f=$out.wrk.txt
  {
    awk -v r="$(field "$f" requests)" -v d="$(field "$f" duration_us)" \
      'BEGIN { printf "rps=%.0f\n", r / (d / 1e6) }'
    awk -v u="$(field "$f" p50_us)" 'BEGIN { printf "p50_ms=%.2f\n", u / 1000 }'
    awk -v u="$(field "$f" p99_us)" 'BEGIN { printf "p99_ms=%.2f\n", u / 1000 }'
    echo "wrk_errors=$(($(field "$f" connect) + $(field "$f" read) + $(field "$f" write) + \
      $(field "$f" status) + $(field "$f" timeout)))"
    echo "wrk_cpu=$RUN_PROXY"
    echo "wrk_load=$RUN_LOAD"
    echo "wrk_others=$RUN_OTHERS"
    echo "wrk_tries=$RUN_TRIES"
  } >>"$kv"
  sed 's/^/    /' "$f" >&2

  # (b) CONNECT tunnels, a new client connection for each.
  taskset -c "$LOAD_CPU" timeout "$RUN_LIMIT" "$CONNECT_RATE" PROXY="127.0.0.1:$PORT" \
    TARGET="127.0.0.1:$ORIGIN_PORT" CONCURRENCY="$CONCURRENCY" SECONDS="$WARMUP" \
    >"$out.cr-warmup.txt" 2>&1 || die "$name: connect_rate warm-up failed: $(cat "$out.cr-warmup.txt")"
  log "round $round: $name: connect_rate CONCURRENCY=$CONCURRENCY SECONDS=$DURATION"
  measured cr "$out.cr.txt"
  f=$out.cr.txt
  {
    echo "tps=$(field "$f" tunnels_per_s)"
    echo "cr_p50_ms=$(field "$f" p50_ms)"
    echo "cr_p99_ms=$(field "$f" p99_ms)"
    echo "cr_errors=$(field "$f" errors)"
    echo "cr_cpu=$RUN_PROXY"
    echo "cr_load=$RUN_LOAD"
    echo "cr_others=$RUN_OTHERS"
    echo "cr_tries=$RUN_TRIES"
  } >>"$kv"
  sed 's/^/    /' "$f" >&2

  echo "rss_mib=$(awk -v k="$(rss_kib "$PID")" 'BEGIN { printf "%.1f\n", k / 1024 }')" >>"$kv"
  stop_pid "$PID"
  log_counts "$name" >>"$kv"
  log "round $round: $name: $(tr '\n' ' ' <"$kv")"
}

# ---------------------------------------------------------------------------------------------
# Rounds: alternate the order so neither proxy always runs first.

for ((round = 1; round <= ROUNDS; round++)); do
  if ((round % 2 == 1)); then
    order=(residency-proxy squid)
  else
    order=(squid residency-proxy)
  fi
  for name in "${order[@]}"; do
    session "$name" "$round"
  done
done
stop_pid "$NGINX_PID"

# ---------------------------------------------------------------------------------------------
# Table: the median over rounds of each figure.

# kv NAME KEY: the values of KEY over all rounds, one a line.
kv_values() {
  local r
  for ((r = 1; r <= ROUNDS; r++)); do
    awk -F= -v k="$2" '$1 == k { print $2 }' "$TMP/r$r/$1.kv"
  done
}
median() { sort -g | awk '{ v[NR] = $1 } END { if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
sum() { awk '{ s += $1 } END { print s + 0 }'; }
all() { kv_values "$1" "$2" | paste -sd/ -; }

# row LABEL KEY [AGG] [NO_RATIO]
row() {
  local agg=${3:-median} ours theirs ratio
  ours=$(kv_values residency-proxy "$2" | $agg)
  theirs=$(kv_values squid "$2" | $agg)
  if [[ -n ${4:-} ]]; then
    ratio=-
  else
    ratio=$(awk -v a="$ours" -v b="$theirs" 'BEGIN { if (b + 0 == 0) print "-"; else printf "%.2f\n", a / b }')
  fi
  printf '| %s | %s | %s | %s |\n' "$1" "$ours" "$theirs" "$ratio"
}

{
  echo
  echo "date: $(date -u '+%Y-%m-%d %H:%M UTC'); $(nproc --all) CPUs ($(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo)); load average at start: $LOADAVG_START, at end: $(cut -d' ' -f1-3 /proc/loadavg)"
  echo "command: DURATION=$DURATION WARMUP=$WARMUP CONCURRENCY=$CONCURRENCY ROUNDS=$ROUNDS bash benches/compare/run.sh"
  echo "squid $(squid -v | sed -n '1s/Squid Cache: Version //p'), nginx $(nginx -v 2>&1 | sed 's/nginx version: nginx\///'), wrk $(wrk -v 2>&1 | awk 'NR == 1 { print $2 }'); proxy on CPU $PROXY_CPU, wrk/connect_rate/nginx on CPU $LOAD_CPU"
  echo
  echo "Median of $ROUNDS round(s):"
  echo
  echo "| metric | residency-proxy | squid | ratio (ours/squid) |"
  echo "|---|---|---|---|"
  row "absolute-form req/s (wrk -t1 -c$CONCURRENCY -d${DURATION}s, keep-alive)" rps
  row "absolute-form latency p50 (ms)" p50_ms
  row "absolute-form latency p99 (ms)" p99_ms
  row "CONNECT tunnels/s (connect_rate, $CONCURRENCY loops, ${DURATION}s)" tps
  row "CONNECT tunnel latency p50 (ms)" cr_p50_ms
  row "CONNECT tunnel latency p99 (ms)" cr_p99_ms
  row "VmRSS after load (MiB)" rss_mib
  row "proxy CPU, absolute-form run (% of one core)" wrk_cpu
  row "proxy CPU, CONNECT run (% of one core)" cr_cpu
  row "load tool + nginx CPU, absolute-form run (% of one core)" wrk_load median x
  row "load tool + nginx CPU, CONNECT run (% of one core)" cr_load median x
  row "other processes' CPU, absolute-form run (% of one core)" wrk_others median x
  row "other processes' CPU, CONNECT run (% of one core)" cr_others median x
  row "absolute-form errors, all rounds (wrk socket errors + status >= 400)" wrk_errors sum x
  row "CONNECT tunnel errors, all rounds" cr_errors sum x
  row "log lines, all rounds (audit records / access.log lines)" log_lines sum x
  row "log lines without a 2xx status, all rounds" log_non2xx sum x
  echo
  echo "Per round (round 1, 2, ...):"
  echo
  echo "| metric | residency-proxy | squid |"
  echo "|---|---|---|"
  for key in rps p50_ms p99_ms wrk_cpu wrk_load wrk_others wrk_tries tps cr_p50_ms cr_p99_ms cr_cpu cr_load cr_others cr_tries rss_mib; do
    printf '| %s | %s | %s |\n' "$key" "$(all residency-proxy "$key")" "$(all squid "$key")"
  done
  echo
  echo "Ratios: above 1 for req/s and tunnels/s means residency-proxy is faster; above 1 for latency, RSS or CPU means it is higher."
}
