#!/usr/bin/env bash
# Installs what enrich needs to build and test on Debian 12, if missing
# (clang and its sanitizer runtimes for the fuzz targets in test/fuzz).
set -euo pipefail

pkgs=(build-essential pkg-config ca-certificates curl openssl perl
      postgresql-15 postgresql-server-dev-15 postgresql-contrib
      libcurl4-openssl-dev libpsl-dev libidn2-dev publicsuffix
      libipc-run-perl postgresql-15-cron nodejs
      clang libclang-rt-14-dev)

missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
# a Node.js from another source (e.g. nodesource) is as good as Debian's
if command -v node >/dev/null 2>&1; then
  missing=("${missing[@]/nodejs}")
fi
missing=($(printf '%s\n' "${missing[@]}" | grep -v '^$' || true))

if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "deps: missing packages: ${missing[*]} (run as root to install them)" >&2
    exit 1
  fi
  echo "deps: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# Debian's postgresql package creates this user; make sure it exists.
id postgres >/dev/null 2>&1 || useradd --system --create-home --shell /bin/bash postgres
