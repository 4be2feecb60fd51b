#!/usr/bin/env bash
# make-certs.sh DIR — throwaway TLS material for the provider emulator.
#
#   DIR/ca.pem, DIR/ca.key         test CA
#   DIR/server.pem, DIR/server.key server cert signed by it, SAN DNS:localhost, IP:127.0.0.1
#   DIR/wrong.pem, DIR/wrong.key   signed by the same CA, SAN DNS:wrong.example only
#   DIR/other-ca.pem (+ .key)      an unrelated CA, for "unknown CA" tests
#
# Idempotent (does nothing when every file is there), quiet, EC P-256,
# ~10 years, random serial numbers.  Works as any user that can write DIR.
set -euo pipefail

dir=${1:?usage: make-certs.sh DIR}
mkdir -p "$dir"

files=(ca.pem ca.key server.pem server.key wrong.pem wrong.key other-ca.pem other-ca.key)
all=1
for f in "${files[@]}"; do [ -s "$dir/$f" ] || all=0; done
[ "$all" = 1 ] && exit 0

command -v openssl >/dev/null || { echo "make-certs.sh: openssl not found" >&2; exit 1; }

tmp=$(mktemp -d "${dir%/}/.certs.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
umask 077
days=3650

serial() { echo "0x$(openssl rand -hex 16 | sed 's/^./7/')"; }   # positive, 128-bit random

newkey() { openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1" 2>/dev/null; }

mkca() { # name cn
  newkey "$tmp/$1.key"
  openssl req -x509 -new -key "$tmp/$1.key" -out "$tmp/$1.pem" -days $days -sha256 \
    -set_serial "$(serial)" -subj "/CN=$2" \
    -addext "basicConstraints=critical,CA:TRUE" \
    -addext "keyUsage=critical,keyCertSign,cRLSign" \
    -addext "subjectKeyIdentifier=hash" 2>/dev/null
}

mkleaf() { # name cn san
  newkey "$tmp/$1.key"
  openssl req -new -key "$tmp/$1.key" -out "$tmp/$1.csr" -subj "/CN=$2" 2>/dev/null
  cat >"$tmp/$1.ext" <<EOF
basicConstraints=critical,CA:FALSE
keyUsage=critical,digitalSignature
extendedKeyUsage=serverAuth
subjectAltName=$3
subjectKeyIdentifier=hash
authorityKeyIdentifier=keyid,issuer
EOF
  openssl x509 -req -in "$tmp/$1.csr" -CA "$tmp/ca.pem" -CAkey "$tmp/ca.key" \
    -set_serial "$(serial)" -days $days -sha256 -extfile "$tmp/$1.ext" \
    -out "$tmp/$1.pem" 2>/dev/null
}

mkca ca "enrich test CA"
mkca other-ca "enrich unrelated test CA"
mkleaf server localhost "DNS:localhost,IP:127.0.0.1"
mkleaf wrong wrong.example "DNS:wrong.example"

# certificates are public; keys stay private to the owner of DIR
chmod 644 "$tmp"/*.pem
chmod 600 "$tmp"/*.key
for f in "${files[@]}"; do mv -f "$tmp/$f" "$dir/$f"; done
