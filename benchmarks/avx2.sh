#!/usr/bin/env bash
# Runs a command as it would run on a CPU with AVX2 but neither AVX-512 nor native bf16 (the
# AMD Zen 3 of issue 34, most laptops before 2022), on a machine that has more: PyTorch's own
# kernels and torch.compile's generated code (ATEN_CPU_CAPABILITY), oneDNN's and MKL's are
# limited to AVX2. bf16 matmuls are then emulated (~1% of the fp32 speed, so `--precision
# auto` picks fp32, as it would there) and the fp32 matmul peak falls to about that of such a
# CPU (Xeon VM, 2 cores: 340 → 218 GFLOP/s). Compiled kernels get a cache of their own: a
# graph compiled for AVX-512 would otherwise be reused.
#
#   bash benchmarks/avx2.sh python benchmarks/quality.py --data ../shared/data/shakespeare.txt --json
#
# A stand-in, not the real thing: caches, memory bandwidth and core count stay this machine's.
set -euo pipefail
export ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2 MKL_ENABLE_INSTRUCTIONS=AVX2
export TORCHINDUCTOR_CACHE_DIR="${TORCHINDUCTOR_CACHE_DIR:-${TMPDIR:-/tmp}/fundamentallm-inductor-avx2}"
exec "$@"
