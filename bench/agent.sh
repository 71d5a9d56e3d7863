#!/usr/bin/env bash
# Agent benchmarks (issue 3, item 7). Not part of scripts/test.
#   1. time from `secretmode agent --once` start to exit with 20 items written, local OpenBao
#   2. CPU and RSS of an idle sidecar (20 items, 30 s refresh interval) over a 60 s window
# Usage: bench/agent.sh [path/to/secretmode]   (default: target/release/secretmode)
# Needs .venv/bin/bao (scripts/test installs it). Everything runs on 127.0.0.1.
set -euo pipefail
cd "$(dirname "$0")/.."
# As the image sets it (Dockerfile): mimalloc commits arenas lazily.
export MIMALLOC_ARENA_EAGER_COMMIT=${MIMALLOC_ARENA_EAGER_COMMIT:-0}
bin=${1:-target/release/secretmode}
bao=.venv/bin/bao
runs=${RUNS:-20}
idle=${IDLE_SECONDS:-60}
[ -x "$bin" ] || { echo "build first: cargo build --release" >&2; exit 1; }
[ -x "$bao" ] || { echo "run scripts/test once to install OpenBao into .venv" >&2; exit 1; }

work=$(mktemp -d)
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
hport=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT

HOME=$work "$bao" server -dev -dev-root-token-id=root -dev-listen-address=127.0.0.1:$port >"$work/bao.log" 2>&1 &
pids+=($!)
addr=http://127.0.0.1:$port
for _ in $(seq 100); do curl -sf "$addr/v1/sys/health" >/dev/null && break; sleep 0.2; done
for i in $(seq -w 1 20); do
  curl -sf -H 'X-Vault-Token: root' -X POST "$addr/v1/secret/data/bench/s$i" \
    -d "{\"data\":{\"value\":\"bench-value-$i\"}}" >/dev/null
done

spec() { # $1 = refresh seconds
  python3 - "$addr" "$hport" "$1" <<'PY'
import json, sys
addr, hport, refresh = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
print(json.dumps({
  "version": 1, "providerName": "vault",
  "provider": {"type": "vault", "address": addr, "kvMount": "secret",
               "auth": {"method": "token", "secretRef": {"name": "t", "key": "t"}}},
  "items": [{"name": f"s{i:02d}", "path": f"bench/s{i:02d}", "key": "value"} for i in range(1, 21)],
  "mountPath": "/cache", "refreshIntervalSeconds": refresh, "maxStalenessSeconds": 3600,
  "startDeadlineSeconds": 30, "healthPort": hport}))
PY
}

export VAULT_TOKEN=root SECRETMODE_AGENT_HEALTH_ADDRESS=127.0.0.1
once_spec=$(spec 30)
times=()
for r in $(seq "$runs"); do
  root="$work/once-$r"
  s=$(date +%s%N)
  SECRETMODE_AGENT_SPEC=$once_spec "$bin" agent --once --root "$root" 2>/dev/null
  e=$(date +%s%N)
  [ "$(ls "$root/cache" | grep -c '^s')" = 20 ] || { echo "run $r: files missing" >&2; exit 1; }
  times+=($(( (e - s) / 1000 )))
done
sorted=$(printf '%s\n' "${times[@]}" | sort -n)
median=$(echo "$sorted" | awk -v n="$runs" 'NR==int((n+1)/2){print}')
min=$(echo "$sorted" | head -1); max=$(echo "$sorted" | tail -1)
printf 'once_20_items_ms: median %.1f min %.1f max %.1f (%d runs)\n' \
  "$(echo "$median/1000" | bc -l)" "$(echo "$min/1000" | bc -l)" "$(echo "$max/1000" | bc -l)" "$runs"

SECRETMODE_AGENT_SPEC=$(spec 30) "$bin" agent --root "$work/sidecar" 2>"$work/sidecar.log" &
sc=$!; pids+=($sc)
for _ in $(seq 100); do curl -sf "http://127.0.0.1:$hport/startup" >/dev/null && break; sleep 0.1; done
sleep 5
tick=$(getconf CLK_TCK)
cpu() { awk '{print $14 + $15}' "/proc/$sc/stat"; }
c0=$(cpu); sleep "$idle"; c1=$(cpu)
rss=$(awk '/VmRSS/{print $2}' "/proc/$sc/status")
hwm=$(awk '/VmHWM/{print $2}' "/proc/$sc/status")
# Scrape once to show the metrics are live (one scrape costs ~nothing).
refreshes=$(curl -sf "http://127.0.0.1:$hport/metrics" | awk '/^secretmode_agent_refreshes_total.*success/{print $2}')
printf 'idle_sidecar: cpu %.3f%% of one core over %ss (%d ticks at %s Hz, %s refreshes so far), rss %s KiB (peak %s KiB)\n' \
  "$(echo "($c1 - $c0) / $tick / $idle * 100" | bc -l)" "$idle" "$((c1 - c0))" "$tick" "$refreshes" "$rss" "$hwm"
printf 'binary: %s bytes (%s)\n' "$(stat -c %s "$bin")" "$bin"
