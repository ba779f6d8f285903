#!/usr/bin/env bash
# Makes the DEVELOPMENT certificates used by the example configuration, with openssl only:
#   dev-ca.pem, dev-ca-key.pem            a development CA (ECDSA P-256)
#   app.test.pem, app.test-key.pem        a leaf for app.test, *.app.test, localhost,
#                                         127.0.0.1 and ::1 (ECDSA P-256), chain = leaf + CA
# Development only: never use these keys, or this CA, in production.
#
# Usage: certs/gen-dev-certs.sh [--force]
#   Files that already exist are kept (an existing CA is reused to issue a missing leaf);
#   --force makes everything anew.
set -euo pipefail

DAYS=825 # the most that TLS clients (Apple's, for one) accept for a leaf
dir="$(cd "$(dirname "$0")" && pwd)"
ca="$dir/dev-ca.pem"
ca_key="$dir/dev-ca-key.pem"
leaf="$dir/app.test.pem"
leaf_key="$dir/app.test-key.pem"

force=0
for arg in "$@"; do
  case "$arg" in
    --force) force=1 ;;
    -h | --help)
      sed -n '2,10p' "$0" | sed 's/^# \{0,1\}//'
      exit 0
      ;;
    *)
      echo "unknown argument: $arg (usage: $0 [--force])" >&2
      exit 2
      ;;
  esac
done

command -v openssl >/dev/null 2>&1 || {
  echo "openssl not found: install it (Debian: apt-get install openssl)" >&2
  exit 1
}

if [[ $force -eq 0 && -s $ca && -s $ca_key && -s $leaf && -s $leaf_key ]]; then
  echo "development certificates already present in $dir (use --force to make new ones)"
  exit 0
fi

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT

serial() { echo "0x$(openssl rand -hex 16)"; }

new_key() { openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1"; }

if [[ $force -eq 1 || ! -s $ca || ! -s $ca_key ]]; then
  echo "making development CA: $ca"
  new_key "$tmp/ca-key.pem"
  openssl req -x509 -new -sha256 -days "$DAYS" -set_serial "$(serial)" \
    -key "$tmp/ca-key.pem" -out "$tmp/ca.pem" \
    -subj "/O=residency-proxy development/CN=residency-proxy development CA (never trust in production)" \
    -addext "basicConstraints=critical,CA:TRUE,pathlen:0" \
    -addext "keyUsage=critical,keyCertSign,cRLSign" \
    -addext "subjectKeyIdentifier=hash"
  mv "$tmp/ca-key.pem" "$ca_key"
  mv "$tmp/ca.pem" "$ca"
  rm -f "$leaf" "$leaf_key" # a new CA needs a new leaf
else
  echo "reusing development CA: $ca"
fi

echo "making leaf certificate: $leaf"
new_key "$tmp/leaf-key.pem"
openssl req -new -sha256 -key "$tmp/leaf-key.pem" -out "$tmp/leaf.csr" \
  -subj "/O=residency-proxy development/CN=app.test"
cat >"$tmp/leaf.ext" <<'EOF'
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature
extendedKeyUsage = serverAuth
subjectAltName = DNS:app.test, DNS:*.app.test, DNS:localhost, IP:127.0.0.1, IP:::1
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
EOF
openssl x509 -req -sha256 -days "$DAYS" -set_serial "$(serial)" \
  -in "$tmp/leaf.csr" -CA "$ca" -CAkey "$ca_key" \
  -extfile "$tmp/leaf.ext" -out "$tmp/leaf.pem"
openssl verify -CAfile "$ca" "$tmp/leaf.pem" >/dev/null
cat "$tmp/leaf.pem" "$ca" >"$tmp/chain.pem"
mv "$tmp/leaf-key.pem" "$leaf_key"
mv "$tmp/chain.pem" "$leaf"

echo "done: $(openssl x509 -in "$leaf" -noout -enddate)"
