#!/usr/bin/env bash
# stop.sh DIR — stop the emulator started by start.sh DIR (pid from DIR/ports.json).
set -uo pipefail

dir=${1:?usage: stop.sh DIR}
ports="$dir/ports.json"
[ -s "$ports" ] || exit 0
pid=$(sed -n 's/.*"pid":\([0-9][0-9]*\).*/\1/p' "$ports")
is_ours() { kill -0 "$1" 2>/dev/null && tr '\0' ' ' <"/proc/$1/cmdline" 2>/dev/null | grep -q "emulator.js"; }

if [ -n "$pid" ] && is_ours "$pid"; then
  kill -TERM "$pid" 2>/dev/null
  for _ in $(seq 1 50); do
    is_ours "$pid" || break
    sleep 0.1
  done
  if is_ours "$pid"; then kill -KILL "$pid" 2>/dev/null; fi
fi
rm -f "$ports"
exit 0
