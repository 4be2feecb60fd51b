#!/usr/bin/env bash
# start.sh DIR — start the provider emulator in the background.
#
# Makes certificates in DIR if missing (make-certs.sh), starts emulator.js on
# free ports (0) with the wrong-host listener, waits up to 10 s for
# DIR/ports.json and prints it:  {"http":N,"https":M,"wrong_host":K,"pid":P}
# Log: DIR/emulator.log.  If an emulator started from DIR is already running,
# its ports are printed and nothing is started (POST /_control {"reset":true}
# to get a clean state; stop.sh DIR first to get a fresh process).
# Writes only into DIR.  Needs: node (or $NODE), openssl.
set -euo pipefail

dir=${1:?usage: start.sh DIR}
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
node=${NODE:-$(command -v node || echo /usr/bin/node)}

mkdir -p "$dir"
dir=$(cd "$dir" && pwd)
ports="$dir/ports.json"

pid_of() { sed -n 's/.*"pid":\([0-9][0-9]*\).*/\1/p' "$1" 2>/dev/null; }
is_ours() { [ -n "$1" ] && kill -0 "$1" 2>/dev/null && tr '\0' ' ' <"/proc/$1/cmdline" 2>/dev/null | grep -q "emulator.js"; }

if [ -s "$ports" ]; then
  old=$(pid_of "$ports")
  if is_ours "$old"; then cat "$ports"; exit 0; fi
  rm -f "$ports"
fi

bash "$here/make-certs.sh" "$dir"

# many concurrent connections need descriptors: raise the soft limit to the hard one
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

nohup "$node" "$here/emulator.js" \
  --http-port 0 --https-port 0 \
  --cert "$dir/server.pem" --key "$dir/server.key" \
  --wrong-host-port 0 --wrong-cert "$dir/wrong.pem" --wrong-key "$dir/wrong.key" \
  --port-file "$ports" </dev/null >"$dir/emulator.log" 2>&1 &
pid=$!

for _ in $(seq 1 100); do
  if [ -s "$ports" ]; then cat "$ports"; exit 0; fi
  if ! kill -0 "$pid" 2>/dev/null; then
    echo "start.sh: emulator exited; log follows:" >&2
    cat "$dir/emulator.log" >&2
    exit 1
  fi
  sleep 0.1
done
echo "start.sh: emulator did not write $ports within 10 s; log follows:" >&2
cat "$dir/emulator.log" >&2
kill "$pid" 2>/dev/null || true
exit 1
