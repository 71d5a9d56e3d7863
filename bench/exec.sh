#!/usr/bin/env bash
# What the exec wrapper (secretmode-exec, `secrets/env-values` in csi, init and sidecar) costs a
# pod, on the static binaries the image ships (docs/BENCHMARKS.md, "Exec wrapper"):
#   1. its size: what the `secretmode-bin` emptyDir holds per pod, on disk
#   2. `--install` (the secretmode-exec init container's work) beside copying the full agent
#   3. its start overhead: exec of the wrapper (3 items read) to the command running, against
#      running the command directly (hyperfine, no shell in between)
#   4. its peak RSS before it execs the command
# Usage: bench/exec.sh [target dir]   (default target/x86_64-unknown-linux-musl/release, as
# scripts/build-static leaves it). Needs hyperfine (apt-get install hyperfine) and GNU time.
# Not part of scripts/test.
set -euo pipefail
cd "$(dirname "$0")/.."
dir=${1:-target/x86_64-unknown-linux-musl/release}
wrapper=$dir/secretmode-exec
agent=$dir/secretmode
runs=${RUNS:-200}
start_runs=${START_RUNS:-2000}
[ -x "$wrapper" ] && [ -x "$agent" ] || { echo "build first: scripts/build-static" >&2; exit 1; }
command -v hyperfine >/dev/null || { echo "needs hyperfine (apt-get install hyperfine)" >&2; exit 1; }
[ -x /usr/bin/time ] || { echo "needs GNU time at /usr/bin/time (apt-get install time)" >&2; exit 1; }

# On disk, as the emptyDir is (not tmpfs): under the repository's target/.
work=$(mktemp -d "$PWD/target/bench-exec.XXXXXX")
trap 'rm -rf "$work"' EXIT
echo "commit $(git rev-parse --short HEAD), $(date -u '+%Y-%m-%d %H:%M UTC'), load average $(cut -d' ' -f1-3 /proc/loadavg)"

echo "== size"
mkdir "$work/bin"
"$wrapper" --install "$work/bin" >/dev/null
printf 'wrapper %s bytes, %s KiB on disk; agent %s bytes\n' \
  "$(stat -c %s "$wrapper")" "$(du -k "$work/bin/secretmode-exec" | cut -f1)" "$(stat -c %s "$agent")"

echo "== install (median of $runs): the wrapper's --install vs copying the agent (cp, then fsync as --install does)"
hyperfine -N --runs "$runs" --warmup 5 --export-json "$work/install.json" \
  "$wrapper --install $work/bin" \
  "sh -c 'cp $agent $work/bin/agent.tmp && sync $work/bin/agent.tmp && mv $work/bin/agent.tmp $work/bin/agent'" \
  >/dev/null

# Three items as a pod mounts them: a password, a PEM certificate, a 4 KiB token.
printf 'pa ss=word\n' >"$work/password"
{ echo '-----BEGIN CERTIFICATE-----'; head -c 900 /dev/urandom | base64; echo '-----END CERTIFICATE-----'; } >"$work/cert"
head -c 3072 /dev/urandom | base64 -w0 >"$work/token"
export DB_PASSWORD_FILE=$work/password TLS_CRT_FILE=$work/cert API_TOKEN_FILE=$work/token
true_bin=$(type -P true)

echo "== start overhead ($start_runs runs): the command through the wrapper vs directly"
hyperfine -N --runs "$start_runs" --warmup 50 --export-json "$work/start.json" \
  "$true_bin" \
  "$work/bin/secretmode-exec --env DB_PASSWORD,TLS_CRT,API_TOKEN -- $true_bin" \
  >/dev/null

python3 - "$work/install.json" "$work/start.json" <<'PY'
import json, sys
for path in sys.argv[1:]:
    for r in json.load(open(path))["results"]:
        t = sorted(r["times"])
        print(f"  {r['command'][:80]}\n    wall: median {t[len(t)//2]*1e3:.3f} ms, mean {r['mean']*1e3:.3f} "
              f"± {r['stddev']*1e3:.3f}, min {t[0]*1e3:.3f}; CPU: user {r['user']*1e3:.3f} + system "
              f"{r['system']*1e3:.3f} ms")
PY

echo "== peak RSS (GNU time, max of 20): the wrapper with its 3 items, exec'ing into its own --help"
# ru_maxrss survives exec as the larger of the two images, and `--help` is the smallest thing
# this binary does: the figure is the wrapper's own peak, items read, right before exec.
peak() { for _ in $(seq 20); do /usr/bin/time -f %M "$@" 2>&1 >/dev/null | tail -1; done | sort -n | tail -1; }
echo "  wrapper, 3 items, then exec: $(peak "$work/bin/secretmode-exec" --env DB_PASSWORD,TLS_CRT,API_TOKEN -- "$work/bin/secretmode-exec" --help) KiB"
echo "  wrapper --help alone:        $(peak "$work/bin/secretmode-exec" --help) KiB"
echo "  $true_bin (dynamic, for scale): $(peak "$true_bin") KiB"
