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
#   PROXY_CPU=0      CPU the proxy under test is pinned to
#   LOAD_CPU=1       CPU the load tool and nginx are pinned to
#   BODY_BYTES=1024  size of the origin's static body
#   SKIP_BUILD=1     use the existing target/release binaries instead of running cargo
#   KEEP_TMP=1       keep the temporary directory (configs, logs) and print its path
#
# Only loopback addresses are used. Every process this script starts is recorded by PID and
# stopped on exit (TERM, then KILL after 5 s); nothing else is touched.
set -euo pipefail

DURATION=${DURATION:-10}
WARMUP=${WARMUP:-2}
CONCURRENCY=${CONCURRENCY:-50}
PROXY_CPU=${PROXY_CPU:-0}
LOAD_CPU=${LOAD_CPU:-1}
BODY_BYTES=${BODY_BYTES:-1024}
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

for tool in nginx squid wrk taskset curl ss cargo awk timeout; do
  command -v "$tool" >/dev/null 2>&1 ||
    die "$tool not found (apt-get install -y squid wrk nginx curl util-linux iproute2)"
done
ncpu=$(nproc)
((PROXY_CPU < ncpu && LOAD_CPU < ncpu)) || die "PROXY_CPU/LOAD_CPU must be below nproc ($ncpu)"
[[ $PROXY_CPU != "$LOAD_CPU" ]] || log "warning: proxy and load tool share CPU $PROXY_CPU"

# ---------------------------------------------------------------------------------------------
# Process bookkeeping: only PIDs started here are ever signalled. A child that has exited stays
# a zombie (its PID cannot be reused) until `wait` reaps it in stop_pid.

TMP=$(mktemp -d "${TMPDIR:-/tmp}/residency-compare.XXXXXX")
# nginx workers and squid drop privileges when started as root: let them read their files.
chmod 755 "$TMP"
STARTED=()

alive() {
  [[ -r /proc/$1/status ]] && ! grep -q '^State:[[:space:]]*Z' "/proc/$1/status" 2>/dev/null
}

stop_pid() {
  local pid=$1 i
  if alive "$pid"; then
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < 50; i++)); do
      alive "$pid" || break
      sleep 0.1
    done
    if alive "$pid"; then
      log "PID $pid still running after 5 s: KILL"
      kill -KILL "$pid" 2>/dev/null || true
    fi
  fi
  wait "$pid" 2>/dev/null || true
  local keep=() p
  for p in "${STARTED[@]}"; do [[ $p == "$pid" ]] || keep+=("$p"); done
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

# A free TCP port on 127.0.0.1, outside the ephemeral range.
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

# utime + stime of a process, in clock ticks.
cpu_ticks() {
  local stat
  stat=$(<"/proc/$1/stat")
  stat=${stat##*) }
  awk '{ print $12 + $13 }' <<<"$stat"
}

rss_kib() { awk '/^VmRSS:/ { print $2 }' "/proc/$1/status"; }

CLK_TCK=$(getconf CLK_TCK)

# ---------------------------------------------------------------------------------------------
# Build.

if [[ $SKIP_BUILD == 1 ]]; then
  log "SKIP_BUILD=1: using existing binaries"
  PROXY_BIN=target/release/residency-proxy
  CONNECT_RATE=$(ls -t target/release/deps/connect_rate-* 2>/dev/null | grep -v '\.d$' | head -n1 || true)
else
  log "building residency-proxy and the connect_rate bench (release)"
  build_json=$(cargo build --release --bin residency-proxy --bench connect_rate \
    --message-format=json-render-diagnostics)
  PROXY_BIN=target/release/residency-proxy
  CONNECT_RATE=$(grep -o '"executable":"[^"]*connect_rate-[^"]*"' <<<"$build_json" |
    tail -n1 | sed 's/^"executable":"//; s/"$//')
fi
[[ -x $PROXY_BIN ]] || die "$PROXY_BIN missing: run cargo build --release"
[[ -n $CONNECT_RATE && -x $CONNECT_RATE ]] ||
  die "connect_rate binary missing: run cargo build --release --bench connect_rate"
log "proxy: $PROXY_BIN; connect_rate: $CONNECT_RATE"

# ---------------------------------------------------------------------------------------------
# Origin: nginx, one worker, a static body, no access log.

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
  "http://127.0.0.1:$ORIGIN_PORT/")
[[ $got == "200 $BODY_BYTES" ]] || die "origin check: got '$got', want '200 $BODY_BYTES'"
log "origin: nginx PID $NGINX_PID on 127.0.0.1:$ORIGIN_PORT (CPU $LOAD_CPU), $BODY_BYTES-byte body"

# wrk script: absolute-form GET to the origin, sent to the proxy; results as one RESULT line.
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
# One proxy's session: sanity checks, warm-ups, measured runs, RSS. Results go to $TMP/$name.*

# result_field FILE KEY: value of KEY=... on the RESULT line of FILE.
result_field() {
  grep '^RESULT ' "$1" | tail -n1 | tr ' ' '\n' | awk -F= -v k="$2" '$1 == k { print $2 }'
}

measure() {
  local name=$1 pid=$2 port=$3 out=$TMP/$name
  local code t0 t1

  code=$(curl -sS --noproxy '' --max-time 5 -x "http://127.0.0.1:$port" -o /dev/null \
    -w '%{http_code} %{size_download}' "http://127.0.0.1:$ORIGIN_PORT/") || true
  [[ $code == "200 $BODY_BYTES" ]] || die "$name: absolute-form check got '$code'"
  code=$(curl -sS --noproxy '' --max-time 5 -p -x "http://127.0.0.1:$port" -o /dev/null \
    -w '%{http_code} %{size_download}' "http://127.0.0.1:$ORIGIN_PORT/") || true
  [[ $code == "200 $BODY_BYTES" ]] || die "$name: CONNECT check got '$code'"
  log "$name: absolute-form and CONNECT checks passed"

  # (a) absolute-form, keep-alive.
  log "$name: wrk warm-up ${WARMUP}s"
  taskset -c "$LOAD_CPU" timeout "$RUN_LIMIT" wrk -t1 -c"$CONCURRENCY" -d"${WARMUP}s" \
    --timeout 5s -s "$TMP/absolute.lua" "http://127.0.0.1:$port/" >"$out.wrk-warmup.txt" 2>&1 ||
    die "$name: wrk warm-up failed: $(cat "$out.wrk-warmup.txt")"
  log "$name: wrk -t1 -c$CONCURRENCY -d${DURATION}s --latency"
  t0=$(cpu_ticks "$pid")
  taskset -c "$LOAD_CPU" timeout "$RUN_LIMIT" wrk -t1 -c"$CONCURRENCY" -d"${DURATION}s" \
    --latency --timeout 5s -s "$TMP/absolute.lua" "http://127.0.0.1:$port/" >"$out.wrk.txt" 2>&1 ||
    die "$name: wrk failed: $(cat "$out.wrk.txt")"
  t1=$(cpu_ticks "$pid")
  awk -v t="$((t1 - t0))" -v hz="$CLK_TCK" -v d="$DURATION" \
    'BEGIN { printf "%.0f\n", 100 * t / hz / d }' >"$out.wrk-cpu"
  sed 's/^/    /' "$out.wrk.txt" >&2

  # (b) CONNECT tunnels, one new connection each.
  log "$name: connect_rate warm-up ${WARMUP}s"
  taskset -c "$LOAD_CPU" timeout "$RUN_LIMIT" "$CONNECT_RATE" PROXY="127.0.0.1:$port" \
    TARGET="127.0.0.1:$ORIGIN_PORT" CONCURRENCY="$CONCURRENCY" SECONDS="$WARMUP" \
    >"$out.cr-warmup.txt" 2>&1 || die "$name: connect_rate warm-up failed: $(cat "$out.cr-warmup.txt")"
  log "$name: connect_rate CONCURRENCY=$CONCURRENCY SECONDS=$DURATION"
  t0=$(cpu_ticks "$pid")
  taskset -c "$LOAD_CPU" timeout "$RUN_LIMIT" "$CONNECT_RATE" PROXY="127.0.0.1:$port" \
    TARGET="127.0.0.1:$ORIGIN_PORT" CONCURRENCY="$CONCURRENCY" SECONDS="$DURATION" \
    >"$out.cr.txt" 2>&1 || die "$name: connect_rate failed: $(cat "$out.cr.txt")"
  t1=$(cpu_ticks "$pid")
  awk -v t="$((t1 - t0))" -v hz="$CLK_TCK" -v d="$DURATION" \
    'BEGIN { printf "%.0f\n", 100 * t / hz / d }' >"$out.cr-cpu"
  sed 's/^/    /' "$out.cr.txt" >&2

  rss_kib "$pid" >"$out.rss"
  log "$name: VmRSS after load $(cat "$out.rss") KiB"
}

# ---------------------------------------------------------------------------------------------
# residency-proxy: one forward listener, policy and audit on (audit to a file).

RP=$TMP/residency-proxy
mkdir -p "$RP"
RP_PORT=$(pick_port)
cat >"$RP/residency-proxy.toml" <<EOF
# Generated by benches/compare/run.sh. Defaults otherwise (uk-adequate profile, embedded GeoIP,
# policy enforced, one audit record per request).
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
taskset -c "$PROXY_CPU" "$PROXY_BIN" run --config "$RP/residency-proxy.toml" \
  >"$RP/stdout.log" 2>"$RP/stderr.log" &
RP_PID=$!
STARTED+=("$RP_PID")
for ((i = 0; i < 300; i++)); do
  grep -q 'listener egress on' "$RP/stderr.log" 2>/dev/null && break
  alive "$RP_PID" || die "residency-proxy exited: $(cat "$RP/stderr.log")"
  sleep 0.1
done
wait_listen "$RP_PORT" "$RP_PID" residency-proxy || die "residency-proxy did not start"
log "residency-proxy: PID $RP_PID on 127.0.0.1:$RP_PORT (CPU $PROXY_CPU)"
measure residency-proxy "$RP_PID" "$RP_PORT"
stop_pid "$RP_PID"
# Audit records, after the proxy flushed them at shutdown.
rp_records=$(wc -l <"$RP/audit.jsonl")
rp_non2xx=$(grep -cv '"status":2[0-9][0-9]' "$RP/audit.jsonl" || true)
rp_overflow=$(grep -c 'audit_overflow' "$RP/stderr.log" || true)
rp_warn=$(grep -cE ' (WARN|ERROR) ' "$RP/stderr.log" || true)
log "residency-proxy: $rp_records audit records, $rp_non2xx without a 2xx status, $rp_overflow overflowed, $rp_warn WARN/ERROR lines on stderr"
if ((rp_non2xx > 0)); then
  log "residency-proxy: first records without a 2xx status:"
  grep -v '"status":2[0-9][0-9]' "$RP/audit.jsonl" | head -n3 >&2
fi
if ((rp_warn > 0)); then
  grep -E ' (WARN|ERROR) ' "$RP/stderr.log" | head -n5 >&2
fi

# ---------------------------------------------------------------------------------------------
# squid: one http_port, no cache, access log to a file (stdio, in-process).

SQ=$TMP/squid
mkdir -p "$SQ"
SQ_PORT=$(pick_port)
squid_user=""
if ((EUID == 0)); then
  # squid refuses to keep root: it switches to cache_effective_user, which must own its files.
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
taskset -c "$PROXY_CPU" squid -N -f "$SQ/squid.conf" >"$SQ/stdout.log" 2>&1 &
SQ_PID=$!
STARTED+=("$SQ_PID")
wait_listen "$SQ_PORT" "$SQ_PID" squid || die "squid did not start: $(tail -n 20 "$SQ/cache.log")"
log "squid: PID $SQ_PID on 127.0.0.1:$SQ_PORT (CPU $PROXY_CPU)"
measure squid "$SQ_PID" "$SQ_PORT"
stop_pid "$SQ_PID"
sq_records=$(wc -l <"$SQ/access.log")
sq_non2xx=$(awk '$4 !~ /\/2[0-9][0-9]$/' "$SQ/access.log" | wc -l)
log "squid: $sq_records access log lines, $sq_non2xx without a 2xx status"
if ((sq_non2xx > 0)); then
  awk '$4 !~ /\/2[0-9][0-9]$/' "$SQ/access.log" | head -n3 >&2
fi

stop_pid "$NGINX_PID"

# ---------------------------------------------------------------------------------------------
# Table.

row() { # row LABEL OURS SQUID [RATIO_OVERRIDE]
  local ratio=${4:-}
  if [[ -z $ratio ]]; then
    ratio=$(awk -v a="$2" -v b="$3" 'BEGIN { if (b + 0 == 0) print "-"; else printf "%.2f\n", a / b }')
  fi
  printf '| %s | %s | %s | %s |\n' "$1" "$2" "$3" "$ratio"
}

wrk_rps() { # requests/s from the RESULT line
  awk -v r="$(result_field "$1" requests)" -v d="$(result_field "$1" duration_us)" \
    'BEGIN { printf "%.0f\n", r / (d / 1e6) }'
}
us_to_ms() { awk -v u="$1" 'BEGIN { printf "%.2f\n", u / 1000 }'; }
wrk_errors() {
  local f=$1
  echo $(($(result_field "$f" connect) + $(result_field "$f" read) + $(result_field "$f" write) + \
    $(result_field "$f" status) + $(result_field "$f" timeout)))
}
mib() { awk -v k="$1" 'BEGIN { printf "%.1f\n", k / 1024 }'; }

R=$TMP/residency-proxy
S=$TMP/squid
{
  echo
  echo "date: $(date -u '+%Y-%m-%d %H:%M UTC')  host: $(nproc) CPUs, load average before: ${LOADAVG_START:-n/a}"
  echo "command: DURATION=$DURATION WARMUP=$WARMUP CONCURRENCY=$CONCURRENCY bash benches/compare/run.sh"
  echo "squid: $(squid -v | head -n1 | sed 's/Squid Cache: //')  nginx: $(nginx -v 2>&1 | sed 's/nginx version: //')  wrk: $(wrk -v 2>&1 | head -n1 | awk '{ print $2 }')"
  echo
  echo "| metric | residency-proxy | squid | ratio (ours/squid) |"
  echo "|---|---|---|---|"
  row "absolute-form req/s (wrk -t1 -c$CONCURRENCY, keep-alive)" "$(wrk_rps "$R.wrk.txt")" "$(wrk_rps "$S.wrk.txt")"
  row "absolute-form latency p50 (ms)" "$(us_to_ms "$(result_field "$R.wrk.txt" p50_us)")" "$(us_to_ms "$(result_field "$S.wrk.txt" p50_us)")"
  row "absolute-form latency p99 (ms)" "$(us_to_ms "$(result_field "$R.wrk.txt" p99_us)")" "$(us_to_ms "$(result_field "$S.wrk.txt" p99_us)")"
  row "absolute-form wrk errors (socket + status >= 400)" "$(wrk_errors "$R.wrk.txt")" "$(wrk_errors "$S.wrk.txt")" "-"
  row "proxy CPU during absolute-form run (% of one core)" "$(cat "$R.wrk-cpu")" "$(cat "$S.wrk-cpu")"
  row "CONNECT tunnels/s (connect_rate, $CONCURRENCY loops)" "$(result_field "$R.cr.txt" tunnels_per_s)" "$(result_field "$S.cr.txt" tunnels_per_s)"
  row "CONNECT tunnel latency p50 (ms)" "$(result_field "$R.cr.txt" p50_ms)" "$(result_field "$S.cr.txt" p50_ms)"
  row "CONNECT tunnel latency p99 (ms)" "$(result_field "$R.cr.txt" p99_ms)" "$(result_field "$S.cr.txt" p99_ms)"
  row "CONNECT tunnel errors" "$(result_field "$R.cr.txt" errors)" "$(result_field "$S.cr.txt" errors)" "-"
  row "proxy CPU during CONNECT run (% of one core)" "$(cat "$R.cr-cpu")" "$(cat "$S.cr-cpu")"
  row "VmRSS after load (MiB)" "$(mib "$(cat "$R.rss")")" "$(mib "$(cat "$S.rss")")"
  row "log lines written (audit / access.log), all phases" "$rp_records" "$sq_records" "-"
  row "log lines without a 2xx status" "$rp_non2xx" "$sq_non2xx" "-"
  echo
  echo "Latency ratios above 1 mean residency-proxy is slower; req/s and tunnels/s ratios above 1 mean it is faster."
}
