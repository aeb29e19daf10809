#!/usr/bin/env bash
# Where the time goes in the kernels that stay under half the copy bandwidth (docs/performance.md):
# perf's cpu-clock sampler on one thread (this machine's perf has no hardware counters).
# Run: bash benches/profile.sh [kernel ...]   (kernels: see examples/profile_kernels.rs)
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build -q --release --example profile_kernels
kernels=("$@")
[ ${#kernels[@]} -gt 0 ] || kernels=(int8_group32 int4_group32_packed histogram)
for k in "${kernels[@]}"; do
  echo "== $k (RAYON_NUM_THREADS=1, 10 iterations; share of samples by function)"
  RAYON_NUM_THREADS=1 perf record -q -e cpu-clock -o "/tmp/rxquant-$k.perf" \
    target/release/examples/profile_kernels "$k" 10 >/dev/null 2>&1
  (perf report -q -i "/tmp/rxquant-$k.perf" --stdio --sort symbol 2>/dev/null | grep -v "^$" | head -8) || true
done
