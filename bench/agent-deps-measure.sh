#!/bin/bash
# Measures what the agent's provider crates add to a clean release build (see docs/AGENT.md).
cd /tmp/agentdeps
export CARGO_TARGET_DIR=/tmp/agentdeps/target
for f in "" vault aws; do
  s=$(date +%s.%N)
  if [ -z "$f" ]; then nice -n 10 cargo build --release -j2 >build-base.log 2>&1; else nice -n 10 cargo build --release -j2 --features $f >build-$f.log 2>&1; fi
  e=$(date +%s.%N)
  echo "feature=${f:-base} seconds=$(echo "$e - $s" | bc) size=$(stat -c %s target/release/agentdeps)" >> results.txt
  cp target/release/agentdeps bin-${f:-base}
done
echo done >> results.txt
