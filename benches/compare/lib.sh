# shellcheck shell=bash
# Helpers for benches/compare/run.sh (sourced, not run): logging, process bookkeeping, ports,
# CPU and memory accounting, and the contention checks. See benches/compare/README.md.
#
# Process bookkeeping: only PIDs started by run.sh are ever signalled. A child that has exited
# stays a zombie (so its PID cannot be reused) until stop_pid reaps it with `wait`.

log() { printf '[compare] %s\n' "$*" >&2; }
die() {
  printf '[compare] error: %s\n' "$*" >&2
  exit 1
}

STARTED=()

alive() {
  [[ -r /proc/$1/status ]] && ! grep -q '^State:[[:space:]]*Z' "/proc/$1/status" 2>/dev/null
}

# track PID: remember a process this script started, so the EXIT trap stops it.
track() { STARTED+=("$1"); }

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
  if [[ ${KEEP_TMP:-0} == 1 ]]; then
    log "kept $TMP"
  else
    rm -rf "$TMP"
  fi
  exit "$rc"
}

PICKED_PORTS=" "
# A free TCP port on 127.0.0.1, below the ephemeral range, not picked before in this run.
pick_port() {
  local p i
  for ((i = 0; i < 500; i++)); do
    p=$((10000 + RANDOM % 20000))
    [[ $PICKED_PORTS == *" $p "* ]] && continue
    if [[ -z $(ss -Htln "sport = :$p") ]]; then
      PICKED_PORTS+="$p "
      echo "$p"
      return 0
    fi
  done
  die "no free port found"
}

# wait_listen PORT PID NAME: until something listens on 127.0.0.1:PORT (at most 30 s).
wait_listen() {
  local port=$1 pid=$2 name=$3 i
  for ((i = 0; i < 300; i++)); do
    alive "$pid" || return 1
    [[ -n $(ss -Htln "src 127.0.0.1 and sport = :$port") ]] && return 0
    sleep 0.1
  done
  log "$name is not listening on 127.0.0.1:$port after 30 s"
  return 1
}

CLK_TCK=$(getconf CLK_TCK)

# utime + stime of a process (all its threads, live and exited), in clock ticks.
proc_ticks() {
  local stat
  stat=$(<"/proc/$1/stat")
  stat=${stat##*) }
  awk '{ print $12 + $13 }' <<<"$stat"
}

# ticks_of PID...: the sum of proc_ticks over the PIDs and their live children.
ticks_of() {
  local p t=0
  for p in "$@" $(for q in "$@"; do pgrep -P "$q" || true; done); do
    t=$((t + $(proc_ticks "$p" 2>/dev/null || echo 0)))
  done
  echo "$t"
}

# rss_of PID...: VmRSS in KiB, summed over the PIDs and their live children.
rss_of() {
  local p t=0 k
  for p in "$@" $(for q in "$@"; do pgrep -P "$q" || true; done); do
    k=$(awk '/^VmRSS:/ { print $2 }' "/proc/$p/status" 2>/dev/null || true)
    t=$((t + ${k:-0}))
  done
  echo "$t"
}

kib_to_mib() { awk -v k="$1" 'BEGIN { printf "%.1f\n", k / 1024 }'; }

# Busy ticks (everything but idle and iowait) of CPU N, from /proc/stat.
cpu_busy_ticks() {
  awk -v c="cpu$1" '$1 == c { print $2 + $3 + $4 + $7 + $8 + $9 }' /proc/stat
}

# Hypervisor steal ticks, all CPUs together, from /proc/stat.
steal_ticks() { awk '$1 == "cpu" { print $9 }' /proc/stat; }

# CPU time, in clock ticks, of every process that is not ours (this script and its children,
# the process under test and nginx), including the time of their reaped children (so a short
# compiler run that ends mid-measurement still counts). Differences of this over a run tell
# how much other work shared the machine: with two CPUs, it shared ours. Call it only while
# no load tool runs (the load tool is a grandchild through `timeout`).
others_ticks() {
  cat /proc/[0-9]*/stat 2>/dev/null | awk -v excl="$$ $OURS" '
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

# field FILE KEY: value of KEY=... on the last RESULT line of FILE.
field() {
  grep '^RESULT ' "$1" | tail -n1 | tr ' ' '\n' | awk -F= -v k="$2" '$1 == k { print $2 }'
}
