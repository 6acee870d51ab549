#!/usr/bin/env python
"""Causal attention, forward and backward, by kernel and dtype: why bf16 on a CPU computes
attention written out (model/transformer.py, `attend`) instead of through
`F.scaled_dot_product_attention`.

For each shape (batch, heads, tokens, head size) and dtype, the milliseconds of one forward
and backward of: SDPA (PyTorch's fused flash-attention kernel for CPU), the written-out form
eagerly, and the written-out form through torch.compile, which fuses the mask and softmax.

    python benchmarks/attention.py --json
"""

from __future__ import annotations

import json
import sys
import time

import torch
import torch.nn.functional as F

from fundamentallm.errors import ArgumentParser, run_reporting_errors
from fundamentallm.model.transformer import written_out_attention

SHAPES = ((16, 4, 128, 32), (16, 6, 256, 64))  # the default model's, and 6 x 384 at context 256
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}


def sdpa(q, k, v):
    return F.scaled_dot_product_attention(q, k, v, is_causal=True)


def written_out(q, k, v):
    return written_out_attention(q, k, v, True, 0.0, False)


def milliseconds(attention, q, k, v, repeats: int) -> float:
    def step():
        attention(q, k, v).sum().backward()

    for _ in range(3):  # warm-up (and compilation)
        step()
    start = time.perf_counter()
    for _ in range(repeats):
        step()
    return (time.perf_counter() - start) / repeats * 1e3


def main(argv: list[str] | None = None) -> int:
    p = ArgumentParser(description="Causal attention forward+backward time by kernel and dtype.")
    p.add_argument("--repeats", type=int, default=20)
    p.add_argument("--shape", type=int, nargs=4, action="append", metavar=("B", "H", "T", "D"),
                   help="a shape to time instead of the default two (repeatable)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    args = p.parse_args(argv)
    return run_reporting_errors(lambda: run(args))


def run(args) -> int:
    kernels = {"sdpa": sdpa, "written_out": written_out, "written_out_compiled": torch.compile(written_out)}
    report = {"capability": torch.backends.cpu.get_cpu_capability(), "threads": torch.get_num_threads(),
              "ms_forward_backward": []}
    for shape in args.shape or SHAPES:
        for name, dtype in DTYPES.items():
            q, k, v = (torch.randn(*shape, dtype=dtype, requires_grad=True) for _ in range(3))
            row = {"shape": list(shape), "dtype": name}
            row.update({kernel: round(milliseconds(fn, q, k, v, args.repeats), 2) for kernel, fn in kernels.items()})
            report["ms_forward_backward"].append(row)
            if not args.json:
                print(row, flush=True)
    if args.json:
        print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
