# shellcheck shell=bash
# The tables of benches/compare/run.sh (sourced, not run): medians of the rounds' figures in
# $TMP/rROUND/PEER.kv (KEY=VALUE lines), printed as Markdown on stdout.

ALL_PEERS=(residency-proxy haproxy squid direct)

# vals PEER KEY: the values of KEY over all rounds, one a line.
vals() {
  local r f
  for ((r = 1; r <= ROUNDS; r++)); do
    f=$TMP/r$r/$1.kv
    [[ -f $f ]] && awk -v k="$2" 'index($0, k "=") == 1 { print substr($0, length(k) + 2) }' "$f"
  done
  return 0
}
median() { sort -g | awk '{ v[NR] = $1 } END { if (NR == 0) exit; if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
vmin() { sort -g | head -n1; }
vmax() { sort -g | tail -n1; }
fmt() { awk -v v="$1" 'BEGIN { if (v == "") print "-"; else if (v >= 100 || v <= -100) printf "%.0f\n", v; else if (v >= 10) printf "%.1f\n", v; else printf "%.2f\n", v }'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (a == "" || b == "" || b + 0 == 0) print "-"; else printf "%.2f\n", a / b }'; }

NOTES=()
note() {
  local n
  for n in "${NOTES[@]+"${NOTES[@]}"}"; do [[ $n == "$1" ]] && return 0; done
  NOTES+=("$1")
}

# cell PEER KEY KIND: "median (min–max) · CPU-µs" for KIND rate, "median (min–max)" for
# KIND plain; "n/a", "failed" or "-" (not run). † marks a figure with a disturbed round.
cell() {
  local peer=$1 key=$2 kind=$3 base=${2%_*} v med lo hi out cpu reason
  reason=$(vals "$peer" "${base}_na" | head -n1)
  [[ $key == rss_* ]] && reason=$(vals "$peer" "${key}_na" | head -n1)
  if [[ -n $reason ]]; then
    note "$peer, ${base}: n/a, $reason"
    echo "n/a"
    return 0
  fi
  v=$(vals "$peer" "$key")
  if [[ -z $v ]]; then
    reason=$(vals "$peer" "${base}_fail" | head -n1)
    [[ $key == rss_* ]] && reason=$(vals "$peer" "${key}_fail" | head -n1)
    if [[ -n $reason ]]; then
      note "$peer, ${base}: failed, $reason"
      echo "failed"
    else
      echo "-"
    fi
    return 0
  fi
  med=$(median <<<"$v")
  lo=$(vmin <<<"$v")
  hi=$(vmax <<<"$v")
  out=$(fmt "$med")
  (($(wc -l <<<"$v") > 1)) && out="$out ($(fmt "$lo")–$(fmt "$hi"))"
  if [[ $kind == rate ]]; then
    cpu=$(vals "$peer" "${base}_cpu" | grep -v '^-$' | median || true)
    [[ -n $cpu ]] && out="$out · $(fmt "$cpu") µs"
  fi
  if [[ $kind != rss ]] && vals "$peer" "${base}_dist" | grep -q '^1$'; then out="$out †"; fi
  [[ $key == s2_rate && $peer == haproxy ]] && out="$out (pseudo-forward)"
  [[ $key == s3* && $peer == direct ]] && out="$out (plain TCP)"
  echo "$out"
}

# ratio_cell KEY KIND OTHER: residency-proxy's median over OTHER's, and for KIND rate the same
# for CPU-µs per operation.
ratio_cell() {
  local key=$1 kind=$2 other=$3 base=${1%_*} a b r c
  a=$(vals residency-proxy "$key" | median || true)
  b=$(vals "$other" "$key" | median || true)
  r=$(ratio "$a" "$b")
  [[ $r == - ]] && {
    echo "-"
    return 0
  }
  if [[ $kind == rate ]]; then
    a=$(vals residency-proxy "${base}_cpu" | grep -v '^-$' | median || true)
    b=$(vals "$other" "${base}_cpu" | grep -v '^-$' | median || true)
    c=$(ratio "$a" "$b")
    [[ $c != - ]] && r="$r (CPU $c)"
  fi
  echo "$r"
}

row() {
  local key=$2 kind=$3 p o line="| $1 |"
  for p in "${ALL_PEERS[@]}"; do line="$line $(cell "$p" "$key" "$kind") |"; done
  for o in haproxy squid direct; do line="$line $(ratio_cell "$key" "$kind" "$o") |"; done
  echo "$line"
}

# per_round KEY: every round's value of KEY for each peer, joined by /.
per_round() {
  local p line="| $1 |"
  for p in "${ALL_PEERS[@]}"; do
    line="$line $(vals "$p" "$1" | paste -sd/ - | sed 's/^$/-/') |"
  done
  echo "$line"
}

versions() {
  printf 'residency-proxy %s (%s), haproxy %s, squid %s, nginx %s, wrk %s, openssl %s' \
    "$("$PROXY_BIN" --version 2>/dev/null | awk 'NR == 1 { print $NF }')" \
    "$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo '?')$(git -C "$ROOT" diff --quiet HEAD 2>/dev/null || echo '+dirty')" \
    "$(haproxy -v | awk 'NR == 1 { print $3 }')" \
    "$(squid -v | sed -n '1s/Squid Cache: Version //p')" \
    "$(nginx -v 2>&1 | sed 's/nginx version: nginx\///')" \
    "$(wrk -v 2>&1 | awk 'NR == 1 { print $2 }')" \
    "$(openssl version | awk '{ print $2 }')"
}

print_tables() {
  local k p
  {
    echo
    echo "date: $START_UTC to $(date -u '+%H:%M UTC'); $(nproc --all) CPUs ($(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo)); load average at start: $LOADAVG_START, at end: $(cut -d' ' -f1-3 /proc/loadavg)"
    echo "command: DURATION=$DURATION WARMUP=$WARMUP ROUNDS=$ROUNDS CONCURRENCY=$CONCURRENCY BULK_CONCURRENCY=$BULK_CONCURRENCY TLS_CONCURRENCY=$TLS_CONCURRENCY HOLD_CONNS=$HOLD_CONNS S6_CONNS=$S6_CONNS TRIES=$TRIES bash benches/compare/run.sh"
    echo "$(versions); peer on CPU $PROXY_CPU, load tools + nginx on CPU $LOAD_CPU"
    [[ $PEERS != "residency-proxy haproxy squid direct" ]] && echo "peers run: $PEERS"
    [[ $SCENARIOS != "s1 s2 s3t s3b s4h s4k s5 mem s6" ]] && echo "scenarios run: $SCENARIOS"
    echo
    echo "Median of $ROUNDS round(s) (min–max over rounds) · CPU-µs of the peer's process per operation. Ratios: residency-proxy / peer (above 1 is faster for rates, higher for latency, RSS and CPU-µs)."
    echo
    echo "| row | residency-proxy | haproxy | squid | direct nginx | ÷ haproxy | ÷ squid | ÷ direct |"
    echo "|---|---|---|---|---|---|---|---|"
    row "S1 reverse keep-alive ${SMALL_BYTES} B, req/s · CPU-µs/req" s1_rate rate
    row "S1 latency p99, ms" s1_p99 plain
    row "S2 forward absolute-form, req/s · CPU-µs/req" s2_rate rate
    row "S2 latency p99, ms" s2_p99 plain
    row "S3 new CONNECT tunnels/s · CPU-µs/tunnel" s3t_rate rate
    row "S3 MB/s through one tunnel · CPU-µs/MiB" s3b_rate rate
    row "S4 TLS full handshakes/s, ECDSA P-256 · CPU-µs/handshake" s4h_rate rate
    row "S4 TLS keep-alive req/s · CPU-µs/req" s4k_rate rate
    row "S4 TLS keep-alive latency p99, ms" s4k_p99 plain
    row "S5 reverse 1 MiB, MB/s · CPU-µs/MiB" s5_rate rate
    row "RSS idle, MiB" rss_idle rss
    row "RSS with $HOLD_CONNS keep-alive connections, MiB" rss_ka rss
    row "RSS with $HOLD_CONNS open tunnels, MiB" rss_tun rss
    row "S6 $S6_CONNS keep-alive connections, req/s · CPU-µs/req" s6_rate rate
    row "S6 RSS with $S6_CONNS keep-alive connections (max during the run), MiB" s6_rss rss
    echo
    echo "† a round of this figure was disturbed (other processes' CPU above ${OTHERS_MAX}% of a core or steal above ${STEAL_MAX}%) in every one of its $TRIES tries: read it with care. MB = 10^6 bytes."
    for k in "${NOTES[@]+"${NOTES[@]}"}"; do echo "- $k"; done
    echo
    echo "Per round (round 1/2/...; rate, p99 in ms, CPU-µs per op, errors, load side and other processes' CPU and steal in % of a core, tries):"
    echo
    echo "| figure | residency-proxy | haproxy | squid | direct nginx |"
    echo "|---|---|---|---|---|"
    for k in s1 s2 s3t s3b s4h s4k s5 s6; do
      for p in rate p99 cpu err load others steal tries; do
        [[ -n $(for q in "${ALL_PEERS[@]}"; do vals "$q" "${k}_$p"; done) ]] && per_round "${k}_$p"
      done
    done
    for k in rss_idle rss_ka rss_ka_open rss_tun rss_tun_open s6_rss log_lines log_non2xx; do
      [[ -n $(for q in "${ALL_PEERS[@]}"; do vals "$q" "$k"; done) ]] && per_round "$k"
    done
    echo
  }
}
