#!/usr/bin/env bash
# Faults under load (issue 6 item 2): certificate rotation, SIGTERM, slow clients, oversized
# bodies, thousands of connections — each prints one PASS/FAIL line (bench/faults.py says what
# each checks). Builds the release binary and installs oha (bench/.tools) first. Loopback only;
# about 2 minutes.
#
#   bench/faults.sh                  # all faults
#   bench/faults.sh sigterm slow     # some
set -euo pipefail
cd "$(dirname "$0")/.."
# As the image sets it (Dockerfile): mimalloc commits arenas lazily.
export MIMALLOC_ARENA_EAGER_COMMIT=${MIMALLOC_ARENA_EAGER_COMMIT:-0}
root=$(pwd)
oha="$root/bench/.tools/bin/oha"
if [ ! -x "$oha" ]; then
  echo "==> installing oha (load generator) into bench/.tools"
  cargo install oha --version 1.16.0 --locked --root "$root/bench/.tools" --quiet
fi
echo "==> building the release binary and the connection drill's client"
cargo build --release --locked --features bench --bin secretmode --bin secretmode-conns --quiet
target_dir=$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')
out="$root/bench/results/faults-$(date -u +%Y%m%dT%H%M%SZ)"
mkdir -p "$out"
python3 bench/make_reviews.py "$out/bodies" >/dev/null
ulimit -n 20000 2>/dev/null || true
{ echo "date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"; echo "nproc: $(nproc)"; echo "load: $(uptime)"; } >"$out/machine.txt"
python3 bench/faults.py --bin "$target_dir/release/secretmode" --oha "$oha" --out "$out" \
  --conns-client "$target_dir/release/secretmode-conns" \
  --body "$out/bodies/sidecar.json" "$@" | tee "$out/summary.txt"
