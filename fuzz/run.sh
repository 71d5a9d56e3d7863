#!/usr/bin/env bash
# Runs each cargo-fuzz target for a fixed budget and records executions and findings.
#   fuzz/run.sh              # 300 s per target (the documented long run)
#   SECONDS_PER_TARGET=30 fuzz/run.sh review
# Needs cargo-fuzz (installed here into bench/.tools) and libFuzzer's nightly-only flags: it
# uses the nightly toolchain if rustup has one, else RUSTC_BOOTSTRAP=1 on stable. A crash is
# copied to fuzz/regressions/<target>/, which tests/properties.rs replays in the normal suite.
set -euo pipefail
cd "$(dirname "$0")"
fuzz_dir=$(pwd)
root=$(cd .. && pwd)
budget=${SECONDS_PER_TARGET:-300}
targets=("$@")
[ ${#targets[@]} -eq 0 ] && targets=(review annotations)

tools="$root/bench/.tools"
if [ ! -x "$tools/bin/cargo-fuzz" ]; then
  echo "==> installing cargo-fuzz into bench/.tools"
  cargo install cargo-fuzz --locked --root "$tools" --quiet
fi
export PATH="$tools/bin:$PATH"
if rustup toolchain list 2>/dev/null | grep -q '^nightly'; then
  toolchain=(+nightly)
else
  toolchain=()
  export RUSTC_BOOTSTRAP=1
fi

mkdir -p "$fuzz_dir/results"
log="$fuzz_dir/results/run-$(date -u +%Y%m%dT%H%M%SZ).txt"
{ echo "date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"; echo "nproc: $(nproc)"; echo "toolchain: ${toolchain[*]:-stable+RUSTC_BOOTSTRAP} $(rustc ${toolchain[@]+"${toolchain[@]}"} --version)"; echo "budget: ${budget}s per target"; } | tee "$log"
status=0
for t in "${targets[@]}"; do
  rm -rf "artifacts/$t"
  mkdir -p "corpus/$t" "artifacts/$t" "$fuzz_dir/regressions/$t"
  echo "==> $t for ${budget}s"
  set +e
  cargo ${toolchain[@]+"${toolchain[@]}"} fuzz run --sanitizer none "$t" "corpus/$t" "seeds/$t" -- \
    -max_total_time="$budget" -print_final_stats=1 -rss_limit_mb=2048 -timeout=10 >"$fuzz_dir/results/$t.log" 2>&1
  rc=$?
  set -e
  execs=$(grep -E '^stat::number_of_executed_units' "$fuzz_dir/results/$t.log" | awk '{print $2}')
  speed=$(grep -E '^stat::average_exec_per_sec' "$fuzz_dir/results/$t.log" | awk '{print $2}')
  cov=$(grep -E '#[0-9]+.*(DONE|pulse|NEW|REDUCE)' "$fuzz_dir/results/$t.log" | tail -1 | grep -oE 'cov: [0-9]+ ft: [0-9]+ corp: [0-9]+/[^ ]+')
  crashes=$(find "artifacts/$t" -type f | wc -l)
  for f in $(find "artifacts/$t" -type f); do cp "$f" "$fuzz_dir/regressions/$t/"; done
  line="$t: exit $rc, ${execs:-?} executions (${speed:-?}/s), $cov, crash/timeout artifacts: $crashes"
  echo "$line" | tee -a "$log"
  [ "$rc" -ne 0 ] && status=1
done
exit $status
