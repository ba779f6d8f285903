# shellcheck shell=bash
# The four peers of benches/compare/run.sh (sourced, not run): the nginx origin ("direct"),
# residency-proxy, haproxy and squid. Writes their configurations, starts and checks them.
# Needs from run.sh: TMP, PROXY_CPU, LOAD_CPU, PROXY_BIN, the certificate files, ORIGIN_PORT,
# ORIGIN_TLS_PORT, and lib.sh.

# ---------------------------------------------------------------------------------------------
# Certificates: a CA and an ECDSA P-256 leaf for bench.test, localhost and 127.0.0.1, made with
# openssl. Sets CA_PEM, CERT_PEM (leaf then CA), KEY_PEM, COMBINED_PEM (chain + key, haproxy).

make_certs() {
  local d=$TMP/certs
  mkdir -p "$d"
  openssl ecparam -name prime256v1 -genkey -noout -out "$d/ca.key" 2>/dev/null
  openssl req -x509 -new -key "$d/ca.key" -sha256 -days 2 -subj "/CN=compare bench CA" \
    -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" \
    -out "$d/ca.pem" 2>/dev/null
  openssl ecparam -name prime256v1 -genkey -noout -out "$d/leaf.sec1" 2>/dev/null
  openssl pkcs8 -topk8 -nocrypt -in "$d/leaf.sec1" -out "$d/leaf.key"
  openssl req -new -key "$d/leaf.key" -subj "/CN=bench.test" -out "$d/leaf.csr" 2>/dev/null
  cat >"$d/leaf.ext" <<'EOF'
basicConstraints=critical,CA:FALSE
keyUsage=critical,digitalSignature
extendedKeyUsage=serverAuth
subjectAltName=DNS:bench.test,DNS:localhost,IP:127.0.0.1
EOF
  openssl x509 -req -in "$d/leaf.csr" -CA "$d/ca.pem" -CAkey "$d/ca.key" -CAcreateserial \
    -days 2 -sha256 -extfile "$d/leaf.ext" -out "$d/leaf.pem" 2>/dev/null
  cat "$d/leaf.pem" "$d/ca.pem" >"$d/chain.pem"
  cat "$d/chain.pem" "$d/leaf.key" >"$d/combined.pem"
  chmod 644 "$d"/*
  CA_PEM=$d/ca.pem
  CERT_PEM=$d/chain.pem
  KEY_PEM=$d/leaf.key
  COMBINED_PEM=$d/combined.pem
  openssl x509 -in "$d/leaf.pem" -noout -text | grep -q 'prime256v1' ||
    die "leaf certificate is not ECDSA P-256"
}

# ---------------------------------------------------------------------------------------------
# Origin: nginx, one worker, pinned to the load CPU, no access log: "/" is a 100-byte body,
# "/1m" a 1 MiB file; a plain and a TLS listener (the TLS one is S4's "direct" column).

start_origin() {
  NG=$TMP/nginx
  ORIGIN_PORT=$(pick_port)
  ORIGIN_TLS_PORT=$(pick_port)
  mkdir -p "$NG/www" "$NG/tmp"
  head -c "$SMALL_BYTES" /dev/zero | tr '\0' 'x' >"$NG/www/index.html"
  head -c 1048576 /dev/urandom >"$NG/www/1m"
  chmod -R a+rX "$NG"
  local user=""
  ((EUID == 0)) && user="user nobody $(id -gn nobody);"
  cat >"$NG/nginx.conf" <<EOF
$user
worker_processes 1;
worker_rlimit_nofile $((S6_CONNS * 3 + 4096));
daemon off;
pid $NG/nginx.pid;
error_log $NG/error.log warn;
events { worker_connections $((S6_CONNS * 3 + 4096)); }
http {
    access_log off;
    sendfile on;
    tcp_nodelay on;
    keepalive_timeout 120s;
    keepalive_requests 100000000;
    default_type application/octet-stream;
    types { text/html html; }
    client_body_temp_path $NG/tmp/body;
    proxy_temp_path $NG/tmp/proxy;
    fastcgi_temp_path $NG/tmp/fastcgi;
    uwsgi_temp_path $NG/tmp/uwsgi;
    scgi_temp_path $NG/tmp/scgi;
    ssl_certificate $CERT_PEM;
    ssl_certificate_key $KEY_PEM;
    ssl_session_cache off;
    ssl_session_tickets off;
    server {
        listen 127.0.0.1:$ORIGIN_PORT;
        listen 127.0.0.1:$ORIGIN_TLS_PORT ssl;
        server_name _;
        root $NG/www;
        index index.html;
    }
}
EOF
  nginx -t -q -e "$NG/error.log" -p "$NG" -c "$NG/nginx.conf" || die "nginx -t failed"
  taskset -c "$LOAD_CPU" nginx -e "$NG/error.log" -p "$NG" -c "$NG/nginx.conf" \
    >"$NG/stdout.log" 2>&1 &
  NGINX_PID=$!
  track "$NGINX_PID"
  wait_listen "$ORIGIN_PORT" "$NGINX_PID" nginx || die "nginx did not start: $(cat "$NG/error.log")"
  wait_listen "$ORIGIN_TLS_PORT" "$NGINX_PID" nginx || die "nginx TLS did not start"
  local got
  got=$(curl -sS --noproxy '*' --max-time 5 -o /dev/null -w '%{http_code} %{size_download}' \
    "http://127.0.0.1:$ORIGIN_PORT/") || true
  [[ $got == "200 $SMALL_BYTES" ]] || die "origin check: got '$got', want '200 $SMALL_BYTES'"
  log "origin: nginx PID $NGINX_PID on 127.0.0.1:$ORIGIN_PORT, TLS $ORIGIN_TLS_PORT (CPU $LOAD_CPU)"
}

# ---------------------------------------------------------------------------------------------
# residency-proxy: a forward listener (absolute-form, CONNECT), a plain reverse listener and a
# TLS reverse listener, both to a pool whose member is the origin. Policy enforced with the
# defaults (uk-adequate, embedded GeoIP); loopback is internal space, opened for every
# listener by `internal_allowed`, so every request and tunnel is classified, looked up and
# decided. One audit record per request/tunnel, to a file.

write_rp_config() {
  RP=$TMP/residency-proxy
  mkdir -p "$RP"
  RP_FWD=$(pick_port)
  RP_REV=$(pick_port)
  RP_TLS=$(pick_port)
  RP_ADMIN=$(pick_port)
  # Like haproxy's maxconn below: a listener's max_connections no higher than the open-files
  # limit allows with one upstream connection each (2 descriptors a connection); past it,
  # connections wait in the listen backlog instead of failing their upstream dial with EMFILE.
  RP_MAXCONN=$((S6_CONNS * 2))
  local fit=$((($(ulimit -n) - 500) / 2))
  ((RP_MAXCONN <= fit)) || RP_MAXCONN=$fit
  local admin="[admin]
bind = \"127.0.0.1:$RP_ADMIN\""
  RP_SIGNING="# no signing key: hash chain only (AUDIT_SIGNING=0)"
  if ((AUDIT_SIGNING)); then
    "$PROXY_BIN" keygen --out "$RP/audit.key" >"$RP/keygen.log" 2>&1 ||
      die "residency-proxy keygen: $(cat "$RP/keygen.log")"
    RP_SIGNING='signing_key = "audit.key"'
  fi
  rp_config "$admin" >"$RP/residency-proxy.toml"
  if ! "$PROXY_BIN" check "$RP/residency-proxy.toml" >"$RP/check.log" 2>&1; then
    if grep -q 'admin' "$RP/check.log"; then
      # A build without the [admin] table: it has no admin listener to move out of the way.
      log "residency-proxy: this build has no [admin] table; config without it"
      RP_ADMIN=""
      rp_config "# (this build has no [admin] table)" >"$RP/residency-proxy.toml"
      "$PROXY_BIN" check "$RP/residency-proxy.toml" >"$RP/check.log" 2>&1 ||
        die "residency-proxy check: $(cat "$RP/check.log")"
    else
      die "residency-proxy check: $(cat "$RP/check.log")"
    fi
  fi
}

rp_config() {
  cat <<EOF
# Generated by benches/compare/run.sh. Everything not set is the default: uk-adequate profile,
# embedded GeoIP, policy enforced, one audit record per request or tunnel.
[audit]
output = "audit.jsonl"
$RP_SIGNING

[limits]
drain_timeout = "2s"

$1

[[listener]]
name = "egress"
bind = "127.0.0.1:$RP_FWD"
allowed_ports = [$ORIGIN_PORT]
max_connections = $RP_MAXCONN

[[listener]]
name = "inbound"
kind = "reverse"
bind = "127.0.0.1:$RP_REV"
default_pool = "origin"
max_connections = $RP_MAXCONN

[[listener]]
name = "inbound-tls"
kind = "reverse"
bind = "127.0.0.1:$RP_TLS"
default_pool = "origin"
max_connections = $RP_MAXCONN

[[listener.cert]]
chain = "$CERT_PEM"
key = "$KEY_PEM"

[[pool]]
name = "origin"
members = ["127.0.0.1:$ORIGIN_PORT"]

[policy]
# The origin is on loopback.
internal_allowed = ["127.0.0.0/8"]
EOF
}

# ---------------------------------------------------------------------------------------------
# haproxy: one thread, a plain frontend and a TLS frontend to a backend with the origin, and a
# pseudo-forward frontend (set-dst / set-dst-port from the absolute URI to a 0.0.0.0:0
# server): haproxy is not a forward proxy, has no CONNECT tunnels. Logs every request
# (httplog) to stdout, which is a file.

write_haproxy_config() {
  HP=$TMP/haproxy
  mkdir -p "$HP"
  HP_FWD=$(pick_port)
  HP_REV=$(pick_port)
  HP_TLS=$(pick_port)
  # haproxy refuses to start if maxconn needs more descriptors (2 a connection) than allowed.
  local maxconn=$((S6_CONNS + 1000)) fit=$((($(ulimit -n) - 500) / 2))
  ((maxconn <= fit)) || maxconn=$fit
  HP_MAXCONN=$maxconn
  cat >"$HP/haproxy.cfg" <<EOF
# Generated by benches/compare/run.sh.
global
    nbthread 1
    maxconn $maxconn
    log stdout format raw local0 info
    ssl-default-bind-ciphersuites TLS_AES_128_GCM_SHA256:TLS_AES_256_GCM_SHA384:TLS_CHACHA20_POLY1305_SHA256

defaults
    mode http
    log global
    option httplog
    maxconn $maxconn
    timeout connect 5s
    timeout client 120s
    timeout server 120s
    timeout http-keep-alive 120s
    timeout http-request 10s

frontend reverse
    bind 127.0.0.1:$HP_REV
    default_backend origin

frontend reverse_tls
    bind 127.0.0.1:$HP_TLS ssl crt $COMBINED_PEM alpn http/1.1
    default_backend origin

frontend pseudo_forward
    bind 127.0.0.1:$HP_FWD
    http-request deny unless { url_ip -m found } { url_port eq $ORIGIN_PORT }
    http-request set-dst url_ip
    http-request set-dst-port url_port
    default_backend dynamic

backend origin
    server origin 127.0.0.1:$ORIGIN_PORT

backend dynamic
    server dst 0.0.0.0:0
EOF
  haproxy -c -q -f "$HP/haproxy.cfg" >"$HP/check.log" 2>&1 || die "haproxy -c: $(cat "$HP/check.log")"
}

# ---------------------------------------------------------------------------------------------
# squid: one process (-N, workers 1), a forward port (absolute-form, CONNECT) and an accel
# (reverse) port whose parent is the origin; no cache; access.log in-process (stdio).

write_squid_config() {
  SQ=$TMP/squid
  mkdir -p "$SQ"
  SQ_FWD=$(pick_port)
  SQ_REV=$(pick_port)
  local user=""
  ((EUID == 0)) && user="cache_effective_user proxy"
  cat >"$SQ/squid.conf" <<EOF
# Generated by benches/compare/run.sh.
http_port 127.0.0.1:$SQ_FWD
http_port 127.0.0.1:$SQ_REV accel defaultsite=127.0.0.1:$ORIGIN_PORT no-vhost name=accel
workers 1
max_filedescriptors $((S6_CONNS * 3 + 4096))
cache_peer 127.0.0.1 parent $ORIGIN_PORT 0 no-query originserver name=origin
acl from_accel myportname accel
cache_peer_access origin allow from_accel
cache_peer_access origin deny all
never_direct allow from_accel
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
$user
EOF
  ((EUID == 0)) && chown -R proxy: "$SQ"
  squid -k parse -f "$SQ/squid.conf" >"$SQ/parse.log" 2>&1 || die "squid -k parse: $(cat "$SQ/parse.log")"
  if grep -qE 'ERROR|FATAL' "$SQ/parse.log"; then
    die "squid -k parse: $(grep -E 'ERROR|FATAL' "$SQ/parse.log")"
  fi
}

# ---------------------------------------------------------------------------------------------
# endpoints PEER: sets FWD (absolute-form / CONNECT port), REV (reverse, plain), TLS (reverse,
# TLS), CONNECT_OK (1 if FWD does CONNECT) and the n/a reasons.

endpoints() {
  FWD="" REV="" TLS="" CONNECT_OK=0 NA_CONNECT="" NA_TLS=""
  case $1 in
    direct)
      FWD=$ORIGIN_PORT REV=$ORIGIN_PORT TLS=$ORIGIN_TLS_PORT
      NA_CONNECT="no tunnel without a proxy (tunnels/s and MB/s: plain TCP to nginx instead)"
      ;;
    residency-proxy) FWD=$RP_FWD REV=$RP_REV TLS=$RP_TLS CONNECT_OK=1 ;;
    haproxy)
      FWD=$HP_FWD REV=$HP_REV TLS=$HP_TLS
      NA_CONNECT="haproxy is not a forward proxy: no CONNECT tunnels"
      ;;
    squid)
      FWD=$SQ_FWD REV=$SQ_REV CONNECT_OK=1
      NA_TLS="not measured: Debian's squid is built with GnuTLS, and its TLS-terminating accel mode is not set up here"
      ;;
  esac
}

# start_peer PEER: start it pinned to PROXY_CPU and wait until it listens; sets PID (for
# direct: nginx, already running) and OURS (the PIDs whose CPU is not "other processes'",
# with this peer alone running; run.sh's use_peer sets it again for the load runs, when
# every peer of the round runs).
start_peer() {
  local p
  case $1 in
    direct)
      PID=$NGINX_PID
      ;;
    residency-proxy)
      rm -f "$RP/audit.jsonl"
      taskset -c "$PROXY_CPU" "$PROXY_BIN" run --config "$RP/residency-proxy.toml" \
        >"$RP/stdout.log" 2>>"$RP/stderr.log" &
      PID=$!
      ;;
    haproxy)
      taskset -c "$PROXY_CPU" haproxy -db -f "$HP/haproxy.cfg" >"$HP/access.log" 2>>"$HP/stderr.log" &
      PID=$!
      ;;
    squid)
      rm -f "$SQ/access.log"
      taskset -c "$PROXY_CPU" squid -N -f "$SQ/squid.conf" >>"$SQ/stdout.log" 2>&1 &
      PID=$!
      ;;
  esac
  OURS="$PID $NGINX_PID"
  [[ $1 == direct ]] && return 0
  track "$PID"
  endpoints "$1"
  for p in $FWD $REV $TLS; do
    wait_listen "$p" "$PID" "$1" || die "$1 did not start (see $TMP/$1)"
  done
}

# stop_peer PEER [PID]: stop it (PID, by default $PID); direct (the origin) keeps running.
stop_peer() {
  [[ $1 == direct ]] || stop_pid "${2:-$PID}"
}

# check_peer PEER: every path the scenarios use returns the right body (curl, 5 s each).
check_peer() {
  local name=$1 code
  endpoints "$name"
  expect() {
    local what=$1 want=$2
    shift 2
    code=$(curl -sS --noproxy '' --max-time 5 -o /dev/null -w '%{http_code} %{size_download}' "$@") || true
    [[ $code == "$want" ]] || die "$name: $what check got '$code', want '$want'"
  }
  expect reverse "200 $SMALL_BYTES" "http://127.0.0.1:$REV/"
  expect "reverse 1 MiB" "200 1048576" "http://127.0.0.1:$REV/1m"
  if [[ $name == direct ]]; then
    expect absolute-form "200 $SMALL_BYTES" --request-target "http://127.0.0.1:$ORIGIN_PORT/" \
      "http://127.0.0.1:$ORIGIN_PORT/"
  else
    expect absolute-form "200 $SMALL_BYTES" -x "http://127.0.0.1:$FWD" "http://127.0.0.1:$ORIGIN_PORT/"
  fi
  if ((CONNECT_OK)); then
    expect CONNECT "200 $SMALL_BYTES" -p -x "http://127.0.0.1:$FWD" "http://127.0.0.1:$ORIGIN_PORT/"
  fi
  if [[ -n $TLS ]]; then
    expect TLS "200 $SMALL_BYTES" --cacert "$CA_PEM" --resolve "bench.test:$TLS:127.0.0.1" \
      "https://bench.test:$TLS/"
  fi
}

# log_counts PEER: log lines written (after the peer stopped and flushed), and those without
# a 2xx status.
log_counts() {
  local lines=0 non2xx=0
  case $1 in
    residency-proxy)
      # Flow records only: the chain's own lines (start, continue, checkpoint) carry `kind`.
      lines=$(grep -cv '"kind":' "$RP/audit.jsonl" || true)
      non2xx=$(grep -v '"kind":' "$RP/audit.jsonl" | grep -cv '"status":2[0-9][0-9]' || true)
      if grep -qE ' (WARN|ERROR) |audit_overflow' "$RP/stderr.log"; then
        log "residency-proxy: WARN/ERROR on stderr (first 5):"
        grep -m5 -E ' (WARN|ERROR) |audit_overflow' "$RP/stderr.log" >&2 || true
      fi
      ;;
    haproxy)
      lines=$(wc -l <"$HP/access.log")
      # httplog: ... "frontend backend/server Tq/Tw/Tc/Tr/Tt status bytes ..."
      non2xx=$(awk '{ for (i = 1; i < NF; i++) if ($i ~ /^-?[0-9]+\/-?[0-9]+\/-?[0-9]+\/-?[0-9]+\/\+?-?[0-9]+$/) { if ($(i + 1) !~ /^2/) n++; break } } END { print n + 0 }' "$HP/access.log")
      ;;
    squid)
      lines=$(wc -l <"$SQ/access.log")
      non2xx=$(awk '$4 !~ /\/2[0-9][0-9]$/' "$SQ/access.log" | wc -l)
      ;;
  esac
  echo "log_lines=$lines"
  echo "log_non2xx=$non2xx"
}
