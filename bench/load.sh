#!/usr/bin/env bash
# Load comparison (issue 6 item 1, issue 2 item 8): the release `secretmode serve` against a
# ceiling server on the same stack (bench/ceiling.rs: read body, parse JSON, echo uid), both on
# loopback over HTTPS with keep-alive, driven by the same load generator (oha, installed here
# into bench/.tools). For each mode's realistic AdmissionReview (examples/admission, compact):
#   fixed    RATE req/s (default 1000) with 50 connections  -> p50/p99/p99.9 latency
#   saturate as fast as possible with CONNS connections    -> requests/s, ratio to the ceiling;
#            also the ceiling answering with secretmode's answer (same size): what the
#            answer's size alone costs; and the ceiling's handler running secretmode's review:
#            what the review costs, apart from what `serve` wraps around it; and the naive
#            parse-clone-diff handler the target is calibrated on (bench/naive.rs), checked
#            first to patch every pod as secretmode does; and the ceiling building the
#            review as a serde_json::Value, the other reading of "parse it as JSON"
#   conns500 as fast as possible with 500 connections       -> peak RSS (VmHWM)
# Prints a table, the secretmode/ceiling ratio and PASS/MISS per target; keeps everything under
# bench/results/<timestamp>/.
#
#   bench/load.sh                 # full run (about 4 minutes with the defaults)
#   bench/load.sh --ratio         # saturation only: prints the ratio (about 1.5 minutes)
#   DURATION=10 REPEAT=3 CONNS=32 RATE=1000 bench/load.sh
#   BUSY="10 20 35" MODES=eso bench/load.sh --ratio   # also the ceiling plus N us of busy
#                                 # work per request: the CPU budget behind a given ratio
#   PHASES=fixed bench/load.sh   # only the fixed-rate latency phase
#   SERVER_CPUS=0 CLIENT_CPUS=1 bench/load.sh --ratio   # servers and oha on separate cores
#                                 # (taskset): no preemption between them; see BENCHMARKS.md
#
# Every load run is bounded (DURATION seconds each) and only touches 127.0.0.1.
set -euo pipefail
cd "$(dirname "$0")/.."
# As the image sets it (Dockerfile): mimalloc commits arenas lazily.
export MIMALLOC_ARENA_EAGER_COMMIT=${MIMALLOC_ARENA_EAGER_COMMIT:-0}
root=$(pwd)

DURATION=${DURATION:-8}
REPEAT=${REPEAT:-1}
CONNS=${CONNS:-32}
RATE=${RATE:-1000}
MODES=${MODES:-"eso csi init sidecar"}
BUSY=${BUSY:-}
PHASES=${PHASES:-"fixed saturate conns500"}
# Optional CPU placement (taskset lists). Unset: everything shares every core, as always.
SERVER_CPUS=${SERVER_CPUS:-}
CLIENT_CPUS=${CLIENT_CPUS:-}
server_on=()
client_on=()
[ -n "$SERVER_CPUS" ] && server_on=(taskset -c "$SERVER_CPUS")
[ -n "$CLIENT_CPUS" ] && client_on=(taskset -c "$CLIENT_CPUS")
[ "${1:-}" = "--ratio" ] && PHASES="saturate"

tools="$root/bench/.tools"
oha="$tools/bin/oha"
if [ ! -x "$oha" ]; then
  echo "==> installing oha (load generator) into bench/.tools"
  cargo install oha --version 1.16.0 --locked --root "$tools" --quiet
fi

echo "==> building release binaries (secretmode, secretmode-ceiling)"
cargo build --release --locked --features bench --bin secretmode --bin secretmode-ceiling --quiet
target_dir=$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')
bin="$target_dir/release"

out="$root/bench/results/$(date -u +%Y%m%dT%H%M%SZ)"
mkdir -p "$out/bodies" "$out/oha" "$out/answers"
python3 bench/make_reviews.py "$out/bodies" > "$out/bodies.txt"
cat "$out/bodies.txt"
mode_bodies=()
for mode in $MODES; do mode_bodies+=("$out/bodies/$mode.json"); done

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
sm_port=$(free_port); sm_admin=$(free_port); ceil_port=$(free_port)

pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT

start_servers() {
  "${server_on[@]}" "$bin/secretmode" serve --addr "127.0.0.1:$sm_port" --admin-addr "127.0.0.1:$sm_admin" \
    --shutdown-grace 2s 2>>"$out/secretmode.log" >/dev/null &
  sm_pid=$!
  pids+=("$sm_pid")
  wait_ready curl -fs "http://127.0.0.1:$sm_admin/readyz"
  # secretmode's own answer to each review, for the ceiling's answer-sized route
  # (bench/ceiling.rs): recorded once, before the ceiling starts.
  for mode in $MODES; do
    [ -s "$out/answers/$mode.json" ] && continue
    curl -fsk -H 'Content-Type: application/json' --data-binary "@$out/bodies/$mode.json" \
      "https://127.0.0.1:$sm_port/mutate" -o "$out/answers/$mode.json"
  done
  # The naive handlers' answers must patch each pod exactly as secretmode's do.
  "$bin/secretmode-ceiling" --check "${mode_bodies[@]}" >>"$out/ceiling.log"
  "${server_on[@]}" "$bin/secretmode-ceiling" "127.0.0.1:$ceil_port" "$out/answers" >>"$out/ceiling.log" 2>&1 &
  ceil_pid=$!
  pids+=("$ceil_pid")
  wait_ready grep -q listening "$out/ceiling.log"
}

# wait_ready COMMAND [ARGS...]: until the command succeeds, at most 10 s.
wait_ready() {
  for _ in $(seq 1 100); do
    if "$@" >/dev/null 2>&1; then
      return 0
    fi
    sleep 0.1
  done
  echo "server did not become ready: $*" >&2
  exit 1
}

stop_servers() {
  kill "$sm_pid" "$ceil_pid" 2>/dev/null || true
  wait "$sm_pid" "$ceil_pid" 2>/dev/null || true
  pids=()
}

hwm_kb() { awk '/VmHWM/ {print $2}' "/proc/$1/status" 2>/dev/null || echo 0; }
# The server's user + system CPU time so far, in clock ticks (all its threads).
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat" 2>/dev/null || echo 0; }
# The server's context switches so far, voluntary and not, summed over its threads: how often
# its workers slept or were preempted, which rises steeply with the time a handler takes.
ctx_switches() { cat "/proc/$1"/task/*/status 2>/dev/null | awk '/ctxt_switches/ {s += $2} END {print s + 0}'; }
# Runs a command and writes its user + system CPU time in milliseconds to the file $1.
with_cpu_ms() {
  python3 -c 'import resource, subprocess, sys
code = subprocess.call(sys.argv[2:])
r = resource.getrusage(resource.RUSAGE_CHILDREN)
open(sys.argv[1], "w").write("%d" % ((r.ru_utime + r.ru_stime) * 1000))
sys.exit(code)' "$@"
}

# run SERVER PHASE MODE CONNS RATE REP
run() {
  local server=$1 phase=$2 mode=$3 conns=$4 rate=$5 rep=$6 port pid
  local path=/mutate
  case $server in
    secretmode) port=$sm_port pid=$sm_pid ;;
    ceiling) port=$ceil_port pid=$ceil_pid ;;
    # the ceiling's work with secretmode's answer for this mode (bench/ceiling.rs)
    ceiling-sized) port=$ceil_port pid=$ceil_pid path=/answer/$mode ;;
    ceiling-busy*) port=$ceil_port pid=$ceil_pid path=/busy/${server#ceiling-busy} ;;
    # secretmode's review (review::review) in the ceiling's handler, without serve's wrapper
    ceiling-review) port=$ceil_port pid=$ceil_pid path=/review ;;
    # the ceiling with the review built as a serde_json::Value
    ceiling-value) port=$ceil_port pid=$ceil_pid path=/value ;;
    # the naive parse-clone-diff handler (bench/naive.rs, flavour kube or value) in the
    # ceiling's handler
    ceiling-naive-*) port=$ceil_port pid=$ceil_pid path=/naive/${server#ceiling-naive-} ;;
  esac
  local file="$out/oha/$server-$phase-$mode-$rep.json"
  local rate_args=()
  [ "$rate" != max ] && rate_args=(-q "$rate" --latency-correction)
  local cpu_before cs_before
  cpu_before=$(cpu_ticks "$pid")
  cs_before=$(ctx_switches "$pid")
  with_cpu_ms "$out/client-ms" "${client_on[@]}" "$oha" --no-tui --output-format json --insecure -w -z "${DURATION}s" -c "$conns" "${rate_args[@]}" \
    -m POST -T application/json -D "$out/bodies/$mode.json" \
    "https://127.0.0.1:$port$path?timeout=10s" >"$file"
  printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$server" "$phase" "$mode" "$conns" "$rate" "$rep" "$(hwm_kb "$pid")" "$file" \
    "$(($(cpu_ticks "$pid") - cpu_before))" "$(cat "$out/client-ms")" "$(($(ctx_switches "$pid") - cs_before))" >>"$out/runs.tsv"
  printf '  %-14s %-9s %-8s c=%-4s rate=%-5s rep=%s done\n' "$server" "$phase" "$mode" "$conns" "$rate" "$rep"
}

{
  echo "date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
  echo "nproc: $(nproc)"
  lscpu | head -n 15
  echo "load before: $(uptime)"
  echo "oha: $("$oha" --version)"
  echo "clock ticks per second: $(getconf CLK_TCK)"
  echo "settings: DURATION=$DURATION REPEAT=$REPEAT CONNS=$CONNS RATE=$RATE MODES=$MODES PHASES=$PHASES BUSY=$BUSY SERVER_CPUS=$SERVER_CPUS CLIENT_CPUS=$CLIENT_CPUS"
} >"$out/machine.txt"

echo "==> load runs (results in ${out#"$root"/})"
# Fresh servers per phase so that VmHWM belongs to that phase; servers alternate per run so
# that background noise hits both alike.
for phase in $PHASES; do
  start_servers
  for rep in $(seq 1 "$REPEAT"); do
    for mode in $MODES; do
      # warm-up: connections, TLS sessions, allocator
      "${client_on[@]}" "$oha" --no-tui --output-format json --insecure -n 2000 -c 8 -m POST -T application/json \
        -D "$out/bodies/$mode.json" "https://127.0.0.1:$sm_port/mutate" >/dev/null
      case $phase in
        fixed)
          run ceiling fixed "$mode" 50 "$RATE" "$rep"
          run secretmode fixed "$mode" 50 "$RATE" "$rep"
          ;;
        saturate)
          run ceiling saturate "$mode" "$CONNS" max "$rep"
          run secretmode saturate "$mode" "$CONNS" max "$rep"
          run ceiling-sized saturate "$mode" "$CONNS" max "$rep"
          run ceiling-review saturate "$mode" "$CONNS" max "$rep"
          run ceiling-value saturate "$mode" "$CONNS" max "$rep"
          run ceiling-naive-kube saturate "$mode" "$CONNS" max "$rep"
          run ceiling-naive-value saturate "$mode" "$CONNS" max "$rep"
          for us in $BUSY; do run "ceiling-busy$us" saturate "$mode" "$CONNS" max "$rep"; done
          ;;
        conns500) run secretmode conns500 "$mode" 500 max "$rep" ;;
      esac
    done
  done
  stop_servers
done
echo "load after: $(uptime)" >>"$out/machine.txt"

echo
python3 bench/report.py "$out"
