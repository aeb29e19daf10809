#!/usr/bin/env bash
# The OpenCL checks on a lent GPU machine without Rust (docs/gpu.md): run `make device-artifacts`
# here first, carry .gpu/, then run this from the repository root there. Results go to $OUT.
set -u
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
ICD=${ICD:-/usr/local/nvidia/lib64/libnvidia-opencl.so}
mkdir -p /tmp/icd && echo "$ICD" > /tmp/icd/nvidia.icd
export OCL_ICD_VENDORS=/tmp/icd
if ! ldconfig -p | grep -q libOpenCL.so.1; then export LD_LIBRARY_PATH=$PWD/.gpu/lib:${LD_LIBRARY_PATH:-}; fi
export RXQUANT_DEVICE=opencl:0 RXQUANT_REQUIRE_OPENCL=1 RXQUANT_DEVICE_CACHE=$OUT/devices.json
PY=${PY:-python3}
{ nvidia-smi -L; lscpu | grep -E "Model name|^CPU\(s\)"; } > "$OUT/machine.txt" 2>&1
$PY -m pip install -q --no-deps --no-index .gpu/wheels/*.whl > "$OUT/pip.txt" 2>&1
(cd /tmp && $PY -c "import rxquant, rxquant.core.devices as d; print(rxquant.__version__, d.opencl_devices())") > "$OUT/import.txt" 2>&1
timeout 120 ./.gpu/opencl_tests --test-threads 1 > "$OUT/rust_tests.txt" 2>&1; echo "rc=$?" >> "$OUT/rust_tests.txt"
timeout 150 $PY -m pytest -q -p no:cacheprovider tests/test_opencl_device.py tests/test_costs.py > "$OUT/pytest.txt" 2>&1; echo "rc=$?" >> "$OUT/pytest.txt"
(cd /tmp && timeout 60 rxquant devices) > "$OUT/devices.txt" 2>&1
cd benches
timeout 240 $PY opencl_bench.py --device opencl:0 --markdown > "$OUT/bench.md" 2>&1; echo "rc=$?" >> "$OUT/bench.md"
RXQUANT_CL_TILES=64x4 timeout 90 $PY opencl_bench.py --device opencl:0 --rows matrix --repeat 3 > "$OUT/bench_tiles64.txt" 2>&1
echo done > "$OUT/done.txt"
